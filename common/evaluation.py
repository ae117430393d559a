"""Evaluate a model or a baseline on a scene's held-out baskets, sampled and full-catalogue.

A scorer gives, for some test shoppers, a score to every item of the scene's catalogue
(`dataset.ranked_items`). From the same scores come both the sampled metrics (each held-out
item against its 99 seeded negatives) and the full-catalogue ones (every item the shopper
had not bought before the test, ranked; HR@10, NDCG@10 and Recall@20 of the basket).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedscene.common.batches import history_inputs, item_inputs
from fedscene.common.data.scene import SceneDataset
from fedscene.common.features import catalogue_content
from fedscene.common.metrics import FULL, SAMPLED, example_metrics, full_ranking_metrics

# (dataset, one test row per shopper) -> scores [rows, len(dataset.ranked_items)]
Scorer = Callable[[SceneDataset, np.ndarray], np.ndarray]


def _model_scores(model: torch.nn.Module, with_head: bool, batch_size: int) -> Scorer:
    def scorer(dataset: SceneDataset, rows: np.ndarray) -> np.ndarray:
        model.eval()
        catalogue = item_inputs(dataset, dataset.ranked_items)
        parts = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                items = dataset.test_history[rows[start:start + batch_size]]
                history = history_inputs(dataset, items)
                if with_head:
                    content = catalogue_content(dataset.item_tfidf, items, dataset.ranked_items)
                    scores = model.catalogue_scores(history, catalogue, torch.from_numpy(content))
                else:
                    scores = model.catalogue_similarity(history, catalogue)
                parts.append(scores.numpy())
        return np.concatenate(parts) if parts else np.empty((0, len(dataset.ranked_items)))

    return scorer


def model_scorer(model: torch.nn.Module, batch_size: int = 64) -> Scorer:
    """The model's logits for every catalogue item (items encoded once per batch)."""
    return _model_scores(model, True, batch_size)


def encoder_scorer(model: torch.nn.Module, batch_size: int = 64) -> Scorer:
    """Zero-shot scores: the encoder's user-item similarity, no head."""
    return _model_scores(model, False, batch_size)


def catalogue_positions(dataset: SceneDataset) -> np.ndarray:
    """Each item index's column in scores over `ranked_items` (-1: not in the catalogue)."""
    position = np.full(len(dataset.item_keys), -1, dtype=np.int64)
    position[dataset.ranked_items] = np.arange(len(dataset.ranked_items))
    return position


def evaluate_users(dataset: SceneDataset, scorer: Scorer, batch_users: int = 256
                   ) -> dict[str, np.ndarray]:
    """Per test shopper (sorted by local id, under 'user'): the mean sampled metrics of
    their held-out items, and the full-catalogue metrics of their held-out basket(s)."""
    users, first_row = np.unique(dataset.test_user, return_index=True)
    position = catalogue_positions(dataset)
    seen = _items_of(dataset.seen_user, dataset.seen_item)
    basket = _items_of(dataset.test_user, dataset.test_item)
    rows_of = _items_of(dataset.test_user, np.arange(len(dataset.test_user)))
    out: dict[str, list[float]] = {m: [] for m in SAMPLED + FULL}
    for start in range(0, len(users), batch_users):
        chunk = users[start:start + batch_users]
        scores = scorer(dataset, first_row[start:start + batch_users])
        for slot, user in enumerate(chunk):
            row_scores = scores[slot]
            rows = rows_of[user]
            candidates = np.concatenate([dataset.test_item[rows, None],
                                         dataset.test_negatives[rows]], axis=1)
            for name, values in example_metrics(row_scores[position[candidates]]).items():
                out[name].append(float(values.mean()))
            ranked = row_scores.astype(np.float64).copy()
            ranked[position[seen.get(user, np.empty(0, np.int64))]] = -np.inf
            relevant = np.zeros(len(ranked), dtype=bool)
            relevant[position[basket[user]]] = True
            for name, value in full_ranking_metrics(ranked, relevant).items():
                out[name].append(value)
    return {"user": users} | {m: np.asarray(v) for m, v in out.items()}


def _items_of(users: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(users, kind="stable")
    users, values = users[order], values[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    return {int(u[0]): v for u, v in zip(np.split(users, bounds), np.split(values, bounds),
                                         strict=True) if len(u)}
