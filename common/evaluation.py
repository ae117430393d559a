"""Evaluate a model (or a baseline scorer) on a scene's held-out interactions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedscene.common.batches import test_batch
from fedscene.common.data.scene import SceneDataset
from fedscene.common.metrics import example_metrics, per_user

Scorer = Callable[[SceneDataset, np.ndarray], np.ndarray]


def model_scorer(model: Callable[..., torch.Tensor], batch_size: int = 512) -> Scorer:
    """Scores [n, 1 + negatives] of the given test rows with the model (or any function of
    the model inputs that returns logits)."""

    def score(dataset: SceneDataset, rows: np.ndarray) -> np.ndarray:
        if isinstance(model, torch.nn.Module):
            model.eval()
        parts = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                inputs = test_batch(dataset, rows[start:start + batch_size])
                parts.append(model(*inputs).numpy())
        return np.concatenate(parts) if parts else np.empty((0, 0))

    return score


def popularity_scorer(counts_by_key: dict[str, float]) -> Scorer:
    """Scores candidates by log(1 + interaction count); counts keyed by the source item id."""

    def score(dataset: SceneDataset, rows: np.ndarray) -> np.ndarray:
        popularity = np.log1p(np.array([counts_by_key.get(k, 0.0) for k in dataset.item_keys]))
        candidates = np.concatenate([dataset.test_item[rows, None],
                                     dataset.test_negatives[rows]], axis=1)
        return popularity[candidates]

    return score


def item_counts(dataset: SceneDataset) -> dict[str, float]:
    """Training interactions per item of one scene, keyed by the source item id."""
    counts = np.bincount(dataset.train_item, minlength=dataset.n_items)
    return dict(zip(dataset.item_keys.tolist(), counts.astype(float).tolist(), strict=True))


def evaluate_users(dataset: SceneDataset, scorer: Scorer) -> dict[str, np.ndarray]:
    """Per-user metric means (users sorted by local id), plus their ids under 'user'."""
    rows = np.arange(len(dataset.test_item))
    values = example_metrics(scorer(dataset, rows))
    out: dict[str, np.ndarray] = {}
    for name, per_example in values.items():
        users, means = per_user(per_example, dataset.test_user)
        out[name] = means
        out["user"] = users
    return out
