"""The baselines a learned arm must beat, as scorers over a scene's catalogue.

- `popularity_scorer`: training interactions per item, ties broken at random (seeded).
- `content_scorer`: TF-IDF cosine between the mean of the shopper's history items and each
  catalogue item, over the items' title tokens. It reads the public catalogue only: no
  interaction, no training, no privacy cost.
- `cooccurrence_scorer`: item-item kNN (cosine of co-purchase counts over training
  shoppers), summed over the shopper's history, ties ordered by popularity. It reads raw
  interactions: a non-private reference, not something a private scene could release.
- `dp_popularity`: recent item counts released once with the Gaussian mechanism under the
  scene's privacy unit (`popularity.py`) at a stated epsilon: the honest floor for any
  private learned arm.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import sparse

from fedscene.common.data.scene import PAD, SceneDataset, Window
from fedscene.common.evaluation import Scorer, catalogue_positions
from fedscene.common.features import catalogue_content
from fedscene.common.popularity import DPCounts, bounded_counts, release_counts


def _history_matrix(dataset: SceneDataset, rows: np.ndarray) -> sparse.csr_matrix:
    """[rows, catalogue] with a 1 for each history item of the test rows."""
    history = dataset.test_history[rows]
    present = history != PAD
    columns = catalogue_positions(dataset)[np.where(present, history, 0)][present]
    row_ids = np.repeat(np.arange(len(rows)), present.sum(1))
    return sparse.csr_matrix((np.ones(len(columns)), (row_ids, columns)),
                             shape=(len(rows), len(dataset.ranked_items)))


def popularity_scorer(counts: np.ndarray, seed: int = 0) -> Scorer:
    """Scores by `counts` (one per catalogue item, in `ranked_items` order); equal counts are
    ordered at random, the same order for every shopper."""
    jitter = np.random.default_rng([seed, 17]).random(len(counts)) * 0.5

    def score(dataset: SceneDataset, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts + jitter, (len(rows), len(counts)))

    return score


def scene_counts(dataset: SceneDataset) -> np.ndarray:
    """Training interactions per catalogue item of the scene."""
    counts = np.bincount(dataset.train_item, minlength=len(dataset.item_keys))
    return counts[dataset.ranked_items].astype(float)


TIE = 1e-9  # far below any real difference: orders only items a scorer ties


def content_scorer(dataset: SceneDataset, seed: int = 0) -> Scorer:
    """Cosine between the TF-IDF sum of the shopper's history and each item's title
    (`features.catalogue_content`, the model's content term); items with no shared word tie
    and are ordered at random (it reads nothing else)."""
    jitter = np.random.default_rng([seed, 19]).random(len(dataset.ranked_items)) * TIE

    def score(data: SceneDataset, rows: np.ndarray) -> np.ndarray:
        return catalogue_content(data.item_tfidf, data.test_history[rows],
                                 data.ranked_items, np.float64) + jitter

    return score


def cooccurrence_scorer(dataset: SceneDataset) -> Scorer:
    """Item kNN: cosine of co-purchase counts over the scene's training shoppers (reads raw
    interactions: a non-private reference)."""
    position = catalogue_positions(dataset)
    users = np.unique(dataset.train_user, return_inverse=True)[1]
    bought = sparse.csr_matrix((np.ones(len(users)), (users, position[dataset.train_item])),
                               shape=(int(users.max(initial=-1)) + 1,
                                      len(dataset.ranked_items)))
    bought.data[:] = 1.0  # a shopper counts once per item
    together = (bought.T @ bought).tocsr()
    together.setdiag(0)
    together.eliminate_zeros()
    degree = np.sqrt(np.asarray(bought.sum(0)).ravel())
    scale = sparse.diags(1.0 / np.maximum(degree, 1e-12))
    similarity = (scale @ together @ scale).tocsr()
    popularity = degree ** 2 / max(float(degree.max(initial=0)) ** 2, 1.0) * TIE

    def score(data: SceneDataset, rows: np.ndarray) -> np.ndarray:
        # Items never bought with the history tie at 0: the more popular first.
        return np.asarray((_history_matrix(data, rows) @ similarity).todense()) + popularity

    return score


def dp_popularity(dataset: SceneDataset, unit: str, epsilon: float, delta: float,
                  window: Window, items_per_shopper: int, rng: np.random.Generator
                  ) -> DPCounts:
    """Item counts in `window` over the scene's catalogue, released under `unit` at
    (epsilon, delta) as `popularity` counts them; `rng` draws the contributions and the
    noise."""
    counts, sensitivity = bounded_counts(dataset, unit, window, items_per_shopper, rng)
    released = release_counts(counts, sensitivity, unit, epsilon, delta, rng)
    return replace(released, counts=released.counts[dataset.ranked_items])
