"""Turn example indices into model inputs by gathering item features per candidate."""

from __future__ import annotations

import numpy as np
import torch

from fedscene.common.data.scene import PAD, SceneDataset

ModelInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def gather_inputs(dataset: SceneDataset, candidates: np.ndarray, history: np.ndarray
                  ) -> ModelInputs:
    """Inputs for [..., K] candidate items scored against [..., L] history items.

    Returns (tokens [...,C,T], price [...,C], category [...,C], item_mask [...,C],
    item_ids [...,K]) where C = K + L and the candidates come first. The leading dimensions
    are [B] examples, or [shoppers, examples] for shopper-level training.
    """
    items = np.concatenate([candidates, history], axis=-1)
    present = items != PAD
    safe = np.where(present, items, 0)
    tokens = dataset.item_tokens[safe] * present[..., None]
    return (
        torch.from_numpy(tokens),
        torch.from_numpy(dataset.item_price[safe] * present),
        torch.from_numpy(dataset.item_category[safe] * present),
        torch.from_numpy(present),
        torch.from_numpy(np.ascontiguousarray(candidates)),
    )


def train_batch(dataset: SceneDataset, negatives: np.ndarray, index: np.ndarray
                ) -> tuple[ModelInputs, torch.Tensor]:
    """A training batch: each example's positive first, then its negatives; and the labels."""
    candidates = np.concatenate([dataset.train_item[index, None], negatives[index]], axis=1)
    labels = torch.zeros(candidates.shape, dtype=torch.float32)
    labels[:, 0] = 1.0
    return gather_inputs(dataset, candidates, dataset.train_history[index]), labels


def test_batch(dataset: SceneDataset, index: np.ndarray) -> ModelInputs:
    """A test batch: the held-out positive first, then its sampled evaluation negatives."""
    candidates = np.concatenate([dataset.test_item[index, None],
                                 dataset.test_negatives[index]], axis=1)
    return gather_inputs(dataset, candidates, dataset.test_history[index])


def unlabelled_batch(dataset: SceneDataset, negatives: np.ndarray, index: np.ndarray
                     ) -> tuple[ModelInputs, torch.Tensor]:
    """Inputs without a next-item target: the user's history against random catalogue
    items. The labels are all zero and unused (an unlabelled scene has no such loss)."""
    candidates = np.ascontiguousarray(negatives[index])
    labels = torch.zeros(candidates.shape, dtype=torch.float32)
    return gather_inputs(dataset, candidates, dataset.train_history[index]), labels
