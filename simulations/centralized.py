"""The `centralized` arm: all scenes' training data pooled in one model, no federation and
no privacy. It is the upper bound federation is measured against, not a deployable mode."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy import sparse

from fedscene.client.start import set_released_start
from fedscene.common.config import ExperimentConfig
from fedscene.common.data import SceneDataset
from fedscene.common.data.scene import PAD, Window, recent_training
from fedscene.common.evaluation import evaluate_users, model_scorer
from fedscene.common.model import SceneModel
from fedscene.common.privacy_units import ExampleUnit
from fedscene.common.randomness import reproducible_source
from fedscene.common.training import train_local


def _shift(ids: np.ndarray, offset: int) -> np.ndarray:
    return np.where(ids == PAD, PAD, ids + offset)


def pool_scenes(datasets: list[SceneDataset]) -> tuple[SceneDataset, list[SceneDataset]]:
    """One dataset over every scene (ids offset, so a scene's items stay its own), and a
    per-scene view into the pooled item table for evaluation."""
    item_offsets = np.cumsum([0] + [d.n_items for d in datasets])[:-1]
    user_offsets = np.cumsum([0] + [d.n_users for d in datasets])[:-1]

    def cat(name: str, shift: str | None = None) -> np.ndarray:
        parts = []
        for d, io, uo in zip(datasets, item_offsets, user_offsets, strict=True):
            value = getattr(d, name)
            offset = {"item": io, "user": uo}.get(shift or "", 0)
            parts.append(_shift(value, int(offset)) if shift else value)
        return np.concatenate(parts)

    pooled = SceneDataset(
        scene="pooled",
        item_keys=cat("item_keys"),
        item_tfidf=sparse.vstack([d.item_tfidf for d in datasets]).tocsr(),
        item_text=cat("item_text"),
        item_price=cat("item_price"), item_category=cat("item_category"),
        train_user=cat("train_user", "user"), train_item=cat("train_item", "item"),
        train_time=cat("train_time"), train_history=cat("train_history", "item"),
        test_user=cat("test_user", "user"), test_item=cat("test_item", "item"),
        test_time=cat("test_time"), test_history=cat("test_history", "item"),
        test_negatives=cat("test_negatives", "item"),
        n_users=int(sum(d.n_users for d in datasets)),
        seen_user=cat("seen_user", "user"), seen_item=cat("seen_item", "item"),
        ranked_items=cat("ranked_items", "item"))
    # A view ranks its scene's own catalogue, the pooled item ids of that scene.
    views = [replace(pooled, scene=d.scene, test_user=d.test_user,
                     test_item=_shift(d.test_item, int(io)), test_time=d.test_time,
                     test_history=_shift(d.test_history, int(io)),
                     test_negatives=_shift(d.test_negatives, int(io)),
                     seen_user=d.seen_user, seen_item=_shift(d.seen_item, int(io)),
                     ranked_items=d.ranked_items + int(io))
             for d, io in zip(datasets, item_offsets, strict=True)]
    return pooled, views


def run_centralized(config: ExperimentConfig, datasets: list[SceneDataset], seed: int
                    ) -> tuple[dict[str, dict[str, np.ndarray]], list[dict]]:
    """Train the pooled model for as many passes as a federated run; evaluate per scene.

    Returns final per-user metrics per scene and per-round per-scene metric means.
    """
    pooled, views = pool_scenes(datasets)
    pooled = recent_training(pooled, Window.of(config.training.recent_days,
                                               config.data.as_of))
    torch.manual_seed(seed)
    model = SceneModel(config.model, pooled.n_items)
    # No privacy: the exact recent counts and co-purchases of the pooled data.
    set_released_start(model, pooled, config, None, reproducible_source(seed),
                       run_id="centralized", round_=0)
    rounds = []
    final: dict[str, dict[str, np.ndarray]] = {}
    for round_ in range(1, config.federation.rounds + 1):
        # No privacy here (the upper bound): examples as units, shuffled reproducibly.
        train_local(model, pooled, config.data.train_negatives, config.training,
                    epochs=config.training.local_epochs, unit=ExampleUnit(),
                    randomness=reproducible_source(seed * 1000 + round_))
        for view in views:
            per_user = evaluate_users(view, model_scorer(model))
            final[view.scene] = per_user
            rounds.append({"round": round_, "scene": view.scene}
                          | {k: float(v.mean()) for k, v in per_user.items() if k != "user"})
    return final, rounds
