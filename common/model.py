"""SceneModel = SharedEncoder + SceneHead, with parameter groups by name prefix.

`encoder.*` reads only the shared feature space (public title vectors, price and category
buckets) and is what federation shares. `head.*` scores (user, item) pairs for one scene;
`head.local_ids.*` holds the scene's own item-id biases and released statistics, which
depend on the scene's catalogue and so are never shared, not even by `fedavg` (the released
popularity counts may be sent beside the parameters to be pooled: `client.pooled`). Every
layer is one Opacus supports (Embedding, Linear, LayerNorm) and each is called once per
forward pass, as ghost clipping requires.

With domain-adversarial alignment a third group, `disc.*`, is a domain discriminator that
reads the encoder's user and item vectors through a gradient-reversal layer: it learns to
tell scenes apart while the encoder learns to make them indistinguishable. It is shared and
averaged like the encoder, since a scene alone only ever sees its own domain.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from fedscene.common.algorithms import LOCAL_IDS
from fedscene.common.batches import ModelInputs
from fedscene.common.config import ExperimentConfig, ModelConfig
from fedscene.common.popularity import prior_scores


class SharedEncoder(nn.Module):
    """Items from their shared features; users as the mean of their history's items."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.embedding_dim
        self.text = nn.Linear(config.text_dim, dim)
        self.price = nn.Embedding(config.price_buckets, dim)
        self.category = nn.Embedding(config.category_buckets, dim)
        self.norm = nn.LayerNorm(dim)
        self.item_mlp = nn.Linear(dim, dim)
        self.user_mlp = nn.Linear(dim, dim)

    def forward(self, text: torch.Tensor, price: torch.Tensor, category: torch.Tensor,
                item_mask: torch.Tensor, n_candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode [..., C] items (candidates first, then history); return (user, candidates).

        text: [..., C, text_dim] public title vectors; item_mask: [..., C] (False = none).
        The leading dimensions are [B] for example-level batches and [shoppers, examples]
        for shopper-level ones, where the first is the privacy unit Opacus clips.
        """
        items = self.encode_items(text, price, category)
        users = self.encode_users(items[..., n_candidates:, :],
                                  item_mask[..., n_candidates:])
        return users, items[..., :n_candidates, :]

    def encode_items(self, text: torch.Tensor, price: torch.Tensor, category: torch.Tensor
                     ) -> torch.Tensor:
        """Item vectors [..., D] from public title vectors [..., text_dim], price, category."""
        items = self.norm(self.text(text) + self.price(price) + self.category(category))
        return torch.tanh(self.item_mlp(items))

    def encode_users(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """User vectors [..., D]: the mean of the history's item vectors [..., L, D]."""
        mask = history_mask.unsqueeze(-1).float()
        pooled = (history * mask).sum(-2) / mask.sum(-2).clamp(min=1.0)
        return torch.tanh(self.user_mlp(pooled))


class LocalItemBias(nn.Module):
    """What a scene knows of its own items by id: a learned bias per item; `prior_counts`,
    the scene's released popularity counts per item, and `prior`, their score; and
    `copurchase`, its released co-purchase factors per item (`common/copurchase.py`). The
    released parts are buffers, not trained, zeros until set, and never in the shared
    parameters (a federated arm sends the released counts beside them, to be pooled).

    `pooled` is the score of the federation's pooled counts (`PooledCounts`) for a scene
    that has no prior of its own. It arrives with each message and is not saved
    (a non-persistent buffer)."""

    def __init__(self, n_items: int, copurchase_rank: int) -> None:
        super().__init__()
        self.bias = nn.Embedding(max(n_items, 1), 1)
        nn.init.zeros_(self.bias.weight)
        self.register_buffer("prior_counts", torch.zeros(max(n_items, 1), dtype=torch.float64))
        self.register_buffer("prior", torch.zeros(max(n_items, 1)))
        self.register_buffer("copurchase", torch.zeros(max(n_items, 1), copurchase_rank))
        self.register_buffer("pooled", torch.zeros(max(n_items, 1)), persistent=False)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.bias(item_ids).squeeze(-1)

    def set_prior(self, counts: np.ndarray) -> None:
        """The scene's popularity counts [n_items] (released under DP, or exact without)."""
        self.prior_counts.copy_(torch.from_numpy(np.asarray(counts, dtype=np.float64)))
        self.prior.copy_(torch.from_numpy(prior_scores(counts)))

    def set_pooled(self, counts: np.ndarray) -> None:
        """The federation's pooled counts of the scene's items [n_items]."""
        self.pooled.copy_(torch.from_numpy(prior_scores(counts)))

    def set_copurchase(self, factors: torch.Tensor) -> None:
        self.copurchase.copy_(factors.to(self.copurchase.dtype))

    def copurchase_scores(self, item_ids: torch.Tensor, history_ids: torch.Tensor,
                          history_mask: torch.Tensor) -> torch.Tensor:
        """[..., K] affinity of each candidate to the history in co-purchase factor space:
        the candidate's factors against the direction of the history's summed factors, in
        [-1, 1] (0 for an empty history or no factors)."""
        history = (self.copurchase[history_ids] * history_mask.unsqueeze(-1)).sum(-2)
        direction = history / history.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return (self.copurchase[item_ids] * direction.unsqueeze(-2)).sum(-1)

    @property
    def has_prior(self) -> bool:
        return bool(self.prior.abs().sum() > 0)

    @property
    def has_pooled(self) -> bool:
        return bool(self.pooled.any())

    @property
    def has_copurchase(self) -> bool:
        """Whether any factor was kept (often none: the term is then 0 and skipped)."""
        return bool(self.copurchase.any())


class SceneHead(nn.Module):
    """Scores each candidate: a learned weight on its public content similarity to the
    shopper's history, plus `prior_weight` x the scene's popularity prior (or, for a scene
    without one, `pooled_weight` x the federation's pooled popularity) and
    `copurchase_weight` x its co-purchase affinity to the history (both released once under
    DP), plus corrections from [user, item, user * item], plus a local item bias.

    The correction layer and the bias start at zero, so an untrained head ranks by content
    similarity, recent popularity and what is bought together; training under DP then only
    has to learn what those cannot say.
    """

    def __init__(self, config: ModelConfig, n_items: int) -> None:
        super().__init__()
        dim = config.embedding_dim
        self.content = nn.Linear(1, 1, bias=False)
        nn.init.constant_(self.content.weight, config.content_weight)
        self.hidden = nn.Linear(3 * dim, config.head_hidden)
        self.out = nn.Linear(config.head_hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.local_ids = (LocalItemBias(n_items, config.copurchase_rank)
                          if config.local_item_ids else None)
        # A fixed weight, not trained: under the sampled-softmax objective DP-SGD pulls it
        # below what ranking the season's baskets needs (measured in client/prior.py's
        # notes), so the prior enters at the weight the config gives.
        self.prior_weight = config.prior_weight if (
            self.local_ids is not None and config.popularity_prior) else 0.0
        self.pooled_weight = config.pooled_prior_weight if self.prior_weight else 0.0
        self.copurchase_weight = config.copurchase_weight if (
            self.local_ids is not None and config.copurchase) else 0.0

    def forward(self, users: torch.Tensor, candidates: torch.Tensor, item_ids: torch.Tensor,
                content: torch.Tensor, history_ids: torch.Tensor, history_mask: torch.Tensor
                ) -> torch.Tensor:
        """Logits [..., K] of candidates (`users` [..., D], `candidates` [..., K, D] and
        their ids [..., K], `content` [..., K]) for the history's item ids [..., L] where
        `history_mask` is True."""
        expanded = users.unsqueeze(-2).expand_as(candidates)
        features = torch.cat([expanded, candidates, expanded * candidates], dim=-1)
        logits = self.out(torch.relu(self.hidden(features))).squeeze(-1)
        logits = logits + self.content(content.unsqueeze(-1)).squeeze(-1)
        if self.local_ids is not None:
            logits = logits + self.local_ids(item_ids)
        if self.prior_weight:
            logits = logits + self.prior_weight * self.local_ids.prior[item_ids]
        if self.pooled_weight and self.local_ids.has_pooled:
            logits = logits + self.pooled_weight * self.local_ids.pooled[item_ids]
        if self.copurchase_weight and self.local_ids.has_copurchase:
            logits = logits + self.copurchase_weight * self.local_ids.copurchase_scores(
                item_ids, history_ids, history_mask)
        return logits


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient is negated on the way back."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def reverse_gradient(inputs: torch.Tensor) -> torch.Tensor:
    """Gradient-reversal layer (Ganin & Lempitsky 2015): what the discriminator learns to
    minimise, the layers before it learn to maximise."""
    return _ReverseGradient.apply(inputs)


class DomainDiscriminator(nn.Module):
    """Logits over the federation's scenes for each encoder vector it is given.

    Linear and without a bias on purpose: each scene trains it with its own class only, and
    a bias (or a hidden layer that can make a constant) would let every scene's copy just
    predict "mine" for everything, which averages to a uniform, uninformative
    discriminator. Without one, the averaged weights separate the scenes' vectors.
    """

    def __init__(self, dim: int, domains: int) -> None:
        super().__init__()
        self.out = nn.Linear(dim, domains, bias=False)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.out(reverse_gradient(vectors))


class SceneModel(nn.Module):
    """Logits [..., n_candidates] for candidates given the user's history.

    With `domains` > 0 the model also holds the discriminator; while `return_domains` is set
    (only during aligned training) forward returns (logits, domain logits
    [..., 1 + K, domains]) for the user vector followed by the K candidate vectors.
    """

    def __init__(self, config: ModelConfig, n_items: int, domains: int = 0) -> None:
        super().__init__()
        self.encoder = SharedEncoder(config)
        self.head = SceneHead(config, n_items)
        self.disc = DomainDiscriminator(config.embedding_dim, domains) if domains > 0 else None
        self.return_domains = False

    def forward(self, text: torch.Tensor, price: torch.Tensor, category: torch.Tensor,
                item_mask: torch.Tensor, item_ids: torch.Tensor, content: torch.Tensor
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`batches.gather_inputs`'s tensors: candidates and history (ids [..., K + L]), then
        the candidates' content similarity [..., K] to the history."""
        n_candidates = content.shape[-1]
        users, candidates = self.encoder(text, price, category, item_mask, n_candidates)
        logits = self.head(users, candidates, item_ids[..., :n_candidates], content,
                           item_ids[..., n_candidates:], item_mask[..., n_candidates:])
        if not self.return_domains or self.disc is None:
            return logits
        vectors = torch.cat([users.unsqueeze(-2), candidates], dim=-2)  # one call: ghost clipping
        return logits, self.disc(vectors)

    def _encode(self, history: ModelInputs, catalogue: ModelInputs
                ) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.encoder
        items = encoder.encode_items(*catalogue[:3])
        users = encoder.encode_users(encoder.encode_items(*history[:3]), history[3])
        return users, items

    def catalogue_scores(self, history: ModelInputs, catalogue: ModelInputs,
                         content: torch.Tensor) -> torch.Tensor:
        """Logits [B, N] of every catalogue item for B users, encoding each item once.

        `history`: (text [B,L,text_dim], price, category, mask [B,L], ids) of the users'
        items; `catalogue`: (text [N,text_dim], price [N], category [N], mask, ids [N]) of
        the items to rank; `content`: [B, N] their content similarity
        (`features.catalogue_content`). Gives the same logits as `forward` on those
        candidates.
        """
        users, items = self._encode(history, catalogue)
        batch = users.shape[0]
        return self.head(users, items.unsqueeze(0).expand(batch, -1, -1),
                         catalogue[4].unsqueeze(0).expand(batch, -1), content, history[4],
                         history[3])

    def catalogue_similarity(self, history: ModelInputs, catalogue: ModelInputs
                             ) -> torch.Tensor:
        """The encoder's user-item dot products [B, N], no head (zero-shot scoring)."""
        users, items = self._encode(history, catalogue)
        return users @ items.T


def build_model(config: ExperimentConfig, n_items: int, algorithm: str) -> SceneModel:
    """The model a scene trains under `algorithm`: with a discriminator over the scenes of
    `data.scenes` when the run is aligned."""
    domains = len(config.data.scenes) if config.aligned(algorithm) else 0
    return SceneModel(config.model, n_items, domains)


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
