"""A scene's co-purchase factors: its item co-occurrence, released once under DP and kept.

The model's head adds `model.copurchase_weight` x the history's affinity in these factors
(`LocalItemBias.copurchase_scores`), so a scene's model starts from what is bought together
as well as from content similarity and popularity. The counts are personal data: under DP
they are released once per scene with the Gaussian mechanism at `privacy.copurchase_share`
of the scene's target epsilon, ledgered as a mechanism that composes with the prior and
training, and only their components above the noise are kept (`common/copurchase.py`).
The factors stay in the scene's state (`head.local_ids.copurchase`, never shared).

Shopper unit only: a purchase pairs with every other item of its shopper, so under the
example unit one example's influence on the pairs is unbounded and nothing is released.
"""

from __future__ import annotations

import numpy as np
import torch

from fedscene.client.prior import countable_units
from fedscene.client.privacy import PrivacyAccount
from fedscene.common.config import ExperimentConfig
from fedscene.common.copurchase import (
    bounded_copurchase,
    noisy_copurchase,
    pair_sensitivity,
    significant_factors,
)
from fedscene.common.data import SceneDataset
from fedscene.common.data.scene import Window
from fedscene.common.model import SceneModel
from fedscene.common.randomness import NoiseSource

RELEASED = "the scene's co-purchase factors (kept in the scene, never sent)"
COPURCHASE = "copurchase-factors"  # the ledger entry's algorithm
MECHANISM = "gaussian (bounded co-purchase counts, released once)"


def set_copurchase(model: SceneModel, dataset: SceneDataset, config: ExperimentConfig,
                   account: PrivacyAccount | None, randomness: NoiseSource, *, run_id: str,
                   round_: int) -> dict | None:
    """Give `model` its scene's co-purchase factors unless the scene's ledger already holds
    their release (the model then has them from the scene's state) or any training (the
    release comes before training, which is calibrated for what it leaves); returns the
    ledger entry of the release (None when nothing was released under DP).

    As for the popularity prior, a scene with fewer than `privacy.min_units` shoppers keeps
    none, with or without DP. Without DP (`account` None) the factors come from the exact
    counts of the popularity window; under DP from counts released when the release leaves
    room in the budget for training.
    """
    head, model_config = model.head, config.model
    counted = (countable_units(dataset, config)
               if head.copurchase_weight and config.counts_copurchase() else None)
    if counted is None:
        return None
    unit, units = counted
    rows = Window.of(model_config.popularity_days, config.data.as_of).rows(dataset)
    items = model_config.copurchase_items
    if account is None:  # every pair of every shopper counted: nothing is spent
        # Every item of every shopper: nothing is drawn, so training's randomness is as
        # without the factors.
        counts = bounded_copurchase(dataset, rows, dataset.n_items, np.random.default_rng(0))
        head.local_ids.set_copurchase(torch.from_numpy(
            significant_factors(counts, 0.0, model_config.copurchase_rank)))
        return None
    if account.ran_beyond_releases():
        # Training ran before (a state from before co-purchase factors existed): its noise
        # was calibrated without this release, which would now overrun the campaign.
        return None
    release = account.one_time_release(COPURCHASE, config.privacy.copurchase_share, units)
    if release is None:
        return None
    _, noise_multiplier = release
    sensitivity = pair_sensitivity(items)
    sigma = noise_multiplier * sensitivity
    counts = bounded_copurchase(dataset, rows, items, randomness.examples)
    released = noisy_copurchase(counts, sigma, randomness.examples)
    entry = account.record_counts(noise_multiplier, sensitivity, unit, units,
                                  unit.group_sizes(dataset), released=RELEASED,
                                  mechanism=MECHANISM, noise_source=randomness.description,
                                  run_id=run_id, round_=round_, algorithm=COPURCHASE)
    head.local_ids.set_copurchase(torch.from_numpy(
        significant_factors(released, sigma, model_config.copurchase_rank)))
    return entry
