"""Popularity pooled over the federation: what lets a scene too small to count its own
still start from what sells.

A scene with fewer than `privacy.min_units` shoppers keeps no popularity prior: its own
counts are chance (`client.prior`). Scenes that share a catalogue (the countries of one
shop) sell much the same things, so under an algorithm that shares parameters each scene
that holds a prior also sends its released counts, keyed by hashed item
(`popularity.item_key_hashes`), and the coordinator sends back their sum over the scenes
(`PooledCounts`) to the scenes that sent none. A scene without a prior of its own scores
its items by the pool at `model.pooled_prior_weight`; a scene with one keeps its own. With
the weight at 0 no scene sends anything (the main job: its malls sell disjoint catalogues).

Nothing new leaves a scene: under DP the counts sent are the release its ledger already
holds (sending it is post-processing, and the ledger entry says it is sent); without DP
they are exact, as every shared parameter is then. The keys say which items the scene
sells, the catalogue README lists among the known limits: the coordinator sees each
contributor's, and a scene sent the pool sees their union.
"""

from __future__ import annotations

import numpy as np

from fedscene.common.data import SceneDataset
from fedscene.common.model import SceneModel
from fedscene.common.popularity import PooledCounts, item_key_hashes


def popularity_part(model: SceneModel, dataset: SceneDataset
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """What the scene adds to the pool: (hashed item keys [n_items], its released prior
    counts [n_items]); None when it holds no prior."""
    local = model.head.local_ids
    # A state saved before the counts were kept has scores but no counts: nothing to send.
    if local is None or not local.has_prior or not local.prior_counts.any():
        return None
    return item_key_hashes(dataset.item_keys), local.prior_counts.numpy().copy()


def set_pooled_prior(model: SceneModel, dataset: SceneDataset, pooled: PooledCounts | None
                     ) -> bool:
    """Give a scene without a prior of its own the pool's score of its items; returns
    whether it was set (not when the scene has its own prior, the weight is 0, nothing was
    pooled, or the pool counts none of the scene's items)."""
    head = model.head
    if (pooled is None or not head.pooled_weight or head.local_ids.has_prior):
        return False
    counts = pooled.on_catalogue(dataset.item_keys)
    if not counts.any():
        return False
    head.local_ids.set_pooled(counts)
    return True
