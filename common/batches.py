"""Turn item indices into model inputs by gathering each item's shared features."""

from __future__ import annotations

import numpy as np
import torch

from fedscene.common.data.scene import PAD, SceneDataset
from fedscene.common.features import candidate_content

# (text, price, category, item_mask, item_ids) of items
ModelInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
# the same for candidates and histories, then the candidates' content similarity
CandidateInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                        torch.Tensor]


def gather_inputs(dataset: SceneDataset, candidates: np.ndarray, history: np.ndarray
                  ) -> CandidateInputs:
    """Inputs for [..., K] candidate items scored against [..., L] history items.

    Returns (text [...,C,text_dim], price [...,C], category [...,C], item_mask [...,C],
    item_ids [...,C], content [...,K]) where C = K + L and the candidates come first (a
    PAD's id is 0, masked);
    `content` is each candidate's exact TF-IDF cosine to the history. The leading dimensions
    are [B] examples, or [shoppers, examples] for shopper-level training.
    """
    items = np.concatenate([candidates, history], axis=-1)
    content = candidate_content(dataset.item_tfidf, history, candidates)
    return (*history_inputs(dataset, items), torch.from_numpy(content))


def history_inputs(dataset: SceneDataset, history: np.ndarray) -> ModelInputs:
    """Model inputs of [B, L] history items (PAD where there is none)."""
    present = history != PAD
    safe = np.where(present, history, 0)
    return (torch.from_numpy(dataset.item_text[safe] * present[..., None]),
            torch.from_numpy(dataset.item_price[safe] * present),
            torch.from_numpy(dataset.item_category[safe] * present),
            torch.from_numpy(present), torch.from_numpy(np.ascontiguousarray(safe)))


def item_inputs(dataset: SceneDataset, items: np.ndarray) -> ModelInputs:
    """Model inputs of [N] catalogue items."""
    return (torch.from_numpy(dataset.item_text[items]),
            torch.from_numpy(dataset.item_price[items]),
            torch.from_numpy(dataset.item_category[items]),
            torch.ones(len(items), dtype=torch.bool),
            torch.from_numpy(np.ascontiguousarray(items)))
