"""SceneModel = SharedEncoder + SceneHead, with parameter groups by name prefix.

`encoder.*` reads only the shared feature space (hashed text tokens, price and category
buckets) and is what federation shares. `head.*` scores (user, item) pairs for one scene;
`head.local_ids.*` holds the scene's own item-id biases, which depend on the scene's
catalogue and so are never shared, not even by `fedavg`. Every layer is one Opacus supports
(Embedding, Linear, LayerNorm) and each is called once per forward pass, as ghost clipping
requires.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fedscene.common.config import ModelConfig

ENCODER = "encoder."
HEAD = "head."
LOCAL_IDS = "head.local_ids."


class SharedEncoder(nn.Module):
    """Items from their shared features; users as the mean of their history's items."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.embedding_dim
        self.tokens = nn.Embedding(config.hash_buckets, dim)
        self.price = nn.Embedding(config.price_buckets, dim)
        self.category = nn.Embedding(config.category_buckets, dim)
        self.norm = nn.LayerNorm(dim)
        self.item_mlp = nn.Linear(dim, dim)
        self.user_mlp = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, price: torch.Tensor, category: torch.Tensor,
                item_mask: torch.Tensor, n_candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode [B, C] items (candidates first, then history); return (user, candidates).

        tokens: [B, C, T] hashed ids (0 = padding); item_mask: [B, C] (False = no item).
        """
        token_mask = (tokens > 0).unsqueeze(-1).float()
        text = (self.tokens(tokens) * token_mask).sum(2) / token_mask.sum(2).clamp(min=1.0)
        items = self.norm(text + self.price(price) + self.category(category))
        items = torch.tanh(self.item_mlp(items))
        history_mask = item_mask[:, n_candidates:].unsqueeze(-1).float()
        history = items[:, n_candidates:]
        pooled = (history * history_mask).sum(1) / history_mask.sum(1).clamp(min=1.0)
        users = torch.tanh(self.user_mlp(pooled))
        return users, items[:, :n_candidates]


class LocalItemBias(nn.Module):
    """One learned bias per local item id: the scene's own popularity signal."""

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.bias = nn.Embedding(max(n_items, 1), 1)
        nn.init.zeros_(self.bias.weight)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.bias(item_ids).squeeze(-1)


class SceneHead(nn.Module):
    """Scores each candidate from [user, item, user * item], plus a local item bias."""

    def __init__(self, config: ModelConfig, n_items: int) -> None:
        super().__init__()
        dim = config.embedding_dim
        self.hidden = nn.Linear(3 * dim, config.head_hidden)
        self.out = nn.Linear(config.head_hidden, 1)
        self.local_ids = LocalItemBias(n_items) if config.local_item_ids else None

    def forward(self, users: torch.Tensor, candidates: torch.Tensor, item_ids: torch.Tensor
                ) -> torch.Tensor:
        expanded = users.unsqueeze(1).expand_as(candidates)
        features = torch.cat([expanded, candidates, expanded * candidates], dim=-1)
        logits = self.out(torch.relu(self.hidden(features))).squeeze(-1)
        if self.local_ids is not None:
            logits = logits + self.local_ids(item_ids)
        return logits


class SceneModel(nn.Module):
    """Logits [B, n_candidates] for candidates given the user's history."""

    def __init__(self, config: ModelConfig, n_items: int) -> None:
        super().__init__()
        self.encoder = SharedEncoder(config)
        self.head = SceneHead(config, n_items)

    def forward(self, tokens: torch.Tensor, price: torch.Tensor, category: torch.Tensor,
                item_mask: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        n_candidates = item_ids.shape[1]
        users, candidates = self.encoder(tokens, price, category, item_mask, n_candidates)
        return self.head(users, candidates, item_ids)


def shared_prefixes(algorithm: str) -> tuple[str, ...]:
    """Which parameter groups an algorithm sends to the server."""
    if algorithm == "fedavg":
        return (ENCODER, HEAD)
    if algorithm in ("fedper", "fedrep"):
        return (ENCODER,)
    return ()


def is_shared(name: str, prefixes: tuple[str, ...]) -> bool:
    """Local item ids are never shared; other parameters are by prefix."""
    return not name.startswith(LOCAL_IDS) and name.startswith(prefixes) if prefixes else False


def split_state(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]
                ) -> tuple[OrderedDict[str, torch.Tensor], OrderedDict[str, torch.Tensor]]:
    """Split a state dict into (shared, local) by the algorithm's shared prefixes."""
    shared: OrderedDict[str, torch.Tensor] = OrderedDict()
    local: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, value in state.items():
        (shared if is_shared(name, prefixes) else local)[name] = value
    return shared, local


def merge_state(*parts: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Join state-dict parts; a name in two parts is an error, not a silent overwrite."""
    merged: OrderedDict[str, torch.Tensor] = OrderedDict()
    for part in parts:
        for name, value in part.items():
            if name in merged:
                raise ValueError(f"parameter {name!r} is in more than one state part")
            merged[name] = value
    return merged
