"""Per-unit gradient-norm samplers for ghost clipping, registered with Opacus on import.

- `nn.Embedding`: Opacus computes the same norms by deduplicating (unit, id) pairs with
  `torch.unique(dim=0)`, a lexicographic sort that dominated a ghost-clipped step on CPU
  when the encoder held a large hashed-token table. Encoding each pair as one integer,
  unit * rows + id, makes it a 1-D sort with identical results.
- `nn.Linear`: Opacus's ghost norm handles inputs of two or three dimensions and always
  forms the [T, T] Gram matrices. A shopper-level batch is [shoppers, examples, items, d],
  so here the middle dimensions are flattened into one T, and when T^2 exceeds the weight's
  size the per-unit gradient (out x in) is formed instead, which is then cheaper (the mixed
  rule of Bu et al., "Differentially private optimization on large model at small cost").
"""

from __future__ import annotations

import torch
from opacus.grad_sample import register_norm_sampler
from torch import nn


@register_norm_sampler(nn.Embedding)
def embedding_norm_sample(layer: nn.Embedding, activations: list[torch.Tensor],
                          backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-example L2 norm of an embedding's weight gradient: [batch] tensor."""
    ids = activations[0]
    batch = ids.shape[0]
    ids = ids.reshape(batch, -1).long()
    grads = backprops.reshape(-1, backprops.shape[-1])
    rows = torch.arange(batch, device=ids.device).unsqueeze(1)
    keys = (rows * layer.num_embeddings + ids).reshape(-1)
    unique_keys, position = torch.unique(keys, sorted=True, return_inverse=True)
    summed = torch.zeros(len(unique_keys), grads.shape[1], dtype=grads.dtype,
                         device=grads.device).index_add_(0, position, grads)
    squared = torch.zeros(batch, dtype=grads.dtype, device=grads.device)
    squared.index_add_(0, unique_keys // layer.num_embeddings, summed.pow(2).sum(1))
    return {layer.weight: squared.sqrt()}


@register_norm_sampler(nn.Linear)
def linear_norm_sample(layer: nn.Linear, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-unit L2 norms of a linear layer's weight and bias gradients: [batch] tensors."""
    batch = backprops.shape[0]
    grads = backprops.reshape(batch, -1, backprops.shape[-1])
    inputs = activations[0].to(backprops.dtype).reshape(batch, -1, activations[0].shape[-1])
    out: dict[nn.Parameter, torch.Tensor] = {}
    if layer.weight.requires_grad:
        positions = grads.shape[1]
        if positions * positions <= layer.in_features * layer.out_features:
            gram = torch.einsum("nik,njk->nij", grads, grads) * torch.einsum(
                "nik,njk->nij", inputs, inputs)
            out[layer.weight] = gram.sum((1, 2)).clamp(min=0).sqrt()
        else:
            per_unit = torch.einsum("nti,ntj->nij", grads, inputs)
            out[layer.weight] = per_unit.flatten(1).norm(dim=1)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = grads.sum(1).norm(dim=1)
    return out
