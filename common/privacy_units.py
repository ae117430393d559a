"""The privacy unit: what one neighbouring change adds or removes, and how batches are cut.

DP-SGD protects whatever it samples and clips as one contribution. A training example
carries the shopper's preceding purchases, so one purchase enters many examples and a
shopper all of theirs: example-level clipping protects neither at the ledger's epsilon.

- `ShopperUnit` (the default): Poisson sampling over shoppers; a sampled shopper brings up
  to `max_examples` of their examples (drawn at random from the call's secret generator),
  and the batch is [shoppers, examples, ...] so that Opacus, which clips per entry of the
  first dimension, clips each shopper's whole contribution once.
- `ExampleUnit`: each example sampled and clipped on its own; kept for comparison.

Each unit also says, by group privacy, what its guarantee means for one purchase and for
one shopper, so that a ledger states it and the audit can show it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from fedscene.common.batches import CandidateInputs, gather_inputs
from fedscene.common.config import PrivacyConfig
from fedscene.common.data.scene import SceneDataset, sample_negatives


@dataclass(frozen=True)
class Batch:
    """Model inputs, candidate labels, and for shopper batches each example's weight in its
    shopper's loss ([shoppers, examples]: 1/examples for real ones, 0 for padding)."""

    inputs: CandidateInputs
    labels: torch.Tensor
    weights: torch.Tensor | None = None


class PrivacyUnit(Protocol):
    """What DP-SGD samples and clips as one contribution."""

    name: str
    description: str
    neighbouring: str

    def count(self, dataset: SceneDataset) -> int:
        """How many units the scene's training data holds (n of the sample rate q = b/n)."""

    def batch(self, dataset: SceneDataset, units: np.ndarray, rng: np.random.Generator,
              labelled: bool, negatives: int) -> Batch:
        """The batch of the sampled `units` (indices in 0..count-1), with `negatives`
        random items per example drawn from `rng` (the call's secret generator)."""

    def group_sizes(self, dataset: SceneDataset) -> dict[str, int]:
        """How many units one purchase and one shopper can change, at most."""

    def units_of_shopper(self, examples: int) -> int:
        """How many units a shopper with `examples` training examples is."""


def _candidates(dataset: SceneDataset, rows: np.ndarray, rng: np.random.Generator,
                labelled: bool, negatives: int) -> tuple[np.ndarray, torch.Tensor]:
    """Candidates of training rows (any shape): the positive first when labelled, then
    `negatives` items the row's shopper never bought, drawn from `rng` for these rows alone
    (so no other shopper's data or position shapes them); an unlabelled row has only random
    catalogue items and all-zero labels."""
    flat = rows.reshape(-1)
    users = dataset.train_user[flat]
    bought = shopper_items(dataset)
    drawn = sample_negatives(users, {int(u): bought[int(u)] for u in np.unique(users)},
                             dataset.n_items, negatives, rng).reshape(*rows.shape, negatives)
    if labelled:
        candidates = np.concatenate([dataset.train_item[rows][..., None], drawn], axis=-1)
    else:
        candidates = drawn
    labels = torch.zeros(candidates.shape, dtype=torch.float32)
    if labelled:
        labels[..., 0] = 1.0
    return candidates, labels


@dataclass(frozen=True)
class ExampleUnit:
    """Example-level DP: one training example is the unit."""

    name: str = "example"
    description: str = ("example: one training example (a purchase with the shopper's "
                        "preceding purchases and its negatives)")
    neighbouring: str = "add-or-remove-one-example"

    def count(self, dataset: SceneDataset) -> int:
        return dataset.n_train

    def batch(self, dataset: SceneDataset, units: np.ndarray, rng: np.random.Generator,
              labelled: bool, negatives: int) -> Batch:
        candidates, labels = _candidates(dataset, units, rng, labelled, negatives)
        return Batch(gather_inputs(dataset, candidates, dataset.train_history[units]), labels)

    def group_sizes(self, dataset: SceneDataset) -> dict[str, int]:
        # A purchase is one example's target and sits in the histories of the next
        # `history_length` examples; the training negatives of every example of its shopper
        # avoid it too. So it removes one example and changes (a removal and an addition)
        # each of the shopper's others: 1 + 2 (n - 1). A shopper is all n of their examples.
        most = int(np.bincount(dataset.train_user).max(initial=0))
        return {"purchase": max(2 * most - 1, 1), "shopper": most}

    def units_of_shopper(self, examples: int) -> int:
        return examples


@dataclass(frozen=True)
class ShopperUnit:
    """Shopper-level DP: all of one shopper's examples are one unit."""

    max_examples: int = 16
    name: str = "shopper"
    description: str = ("shopper: all of one shopper's training examples (up to "
                        "max_examples_per_shopper of them in a step, clipped together)")
    neighbouring: str = "add-or-remove-one-shopper"

    def count(self, dataset: SceneDataset) -> int:
        return len(shopper_rows(dataset))

    def batch(self, dataset: SceneDataset, units: np.ndarray, rng: np.random.Generator,
              labelled: bool, negatives: int) -> Batch:
        groups = shopper_rows(dataset)
        width = max((min(len(groups[u]), self.max_examples) for u in units), default=1)
        rows = np.zeros((len(units), width), dtype=np.int64)
        weights = np.zeros((len(units), width), dtype=np.float32)
        for slot, unit in enumerate(units):
            own = groups[unit]
            if len(own) > self.max_examples:
                own = rng.choice(own, self.max_examples, replace=False)
            rows[slot, :] = own[0]  # padding repeats a real row; its weight is 0
            rows[slot, :len(own)] = own
            weights[slot, :len(own)] = 1.0 / len(own)
        candidates, labels = _candidates(dataset, rows, rng, labelled, negatives)
        inputs = gather_inputs(dataset, candidates, dataset.train_history[rows])
        return Batch(inputs, labels, torch.from_numpy(weights))

    def group_sizes(self, dataset: SceneDataset) -> dict[str, int]:
        # A purchase changed inside a shopper who stays is that shopper removed and the
        # changed shopper added: two units.
        return {"purchase": 2, "shopper": 1}

    def units_of_shopper(self, examples: int) -> int:
        return 1


_CACHE: dict[tuple[int, str], tuple[SceneDataset, object]] = {}


def _cached(dataset: SceneDataset, what: str, build):
    """Per-dataset derived arrays, built once per dataset object (every step needs them)."""
    key = (id(dataset), what)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is dataset:
        return hit[1]
    if len(_CACHE) > 64:
        _CACHE.clear()
    value = build()
    _CACHE[key] = (dataset, value)
    return value


def shopper_rows(dataset: SceneDataset) -> list[np.ndarray]:
    """Training row indices of each shopper present in the training data."""
    def build() -> list[np.ndarray]:
        order = np.argsort(dataset.train_user, kind="stable")
        bounds = np.flatnonzero(np.diff(dataset.train_user[order])) + 1
        return [g for g in np.split(order, bounds) if len(g)]
    return _cached(dataset, "rows", build)


def shopper_items(dataset: SceneDataset) -> dict[int, np.ndarray]:
    """Each training shopper's distinct items: what their negatives must avoid."""
    def build() -> dict[int, np.ndarray]:
        return {int(dataset.train_user[rows[0]]): np.unique(dataset.train_item[rows])
                for rows in shopper_rows(dataset)}
    return _cached(dataset, "items", build)


def declared_unit(privacy: PrivacyConfig) -> PrivacyUnit:
    """The unit `privacy.unit` names, whether or not DP is on: what `min_units` counts and
    what the DP baselines release under."""
    if privacy.unit == "shopper":
        return ShopperUnit(privacy.max_examples_per_shopper)
    return ExampleUnit()


def unit_of(privacy: PrivacyConfig) -> PrivacyUnit:
    """The unit training batches by. Without DP nothing is clipped per unit, so training
    takes examples one by one (more, smaller steps), as a non-private model would."""
    return declared_unit(privacy) if privacy.enabled else ExampleUnit()


def group_guarantee(epsilon: float, delta: float, group: int) -> dict[str, float] | None:
    """(epsilon, delta) for datasets `group` units apart, by group privacy:
    k * epsilon and delta * (e^{k eps} - 1) / (e^eps - 1). None when delta reaches 1 (or
    epsilon is infinite): then nothing is guaranteed."""
    if group <= 0:
        return {"epsilon": 0.0, "delta": 0.0}
    if not math.isfinite(epsilon):
        return None
    if group == 1:
        return {"epsilon": epsilon, "delta": delta}
    try:
        growth = (math.expm1(group * epsilon) / math.expm1(epsilon) if epsilon > 0
                  else float(group))
    except OverflowError:
        return None
    if delta * growth >= 1.0:
        return None
    return {"epsilon": group * epsilon, "delta": delta * growth}


def meaning(epsilon: float, delta: float, groups: dict[str, int]) -> dict[str, str]:
    """What a ledger's (epsilon, delta) guarantees for one purchase and for one shopper."""
    out = {}
    for what, size in groups.items():
        bound = group_guarantee(epsilon, delta, size)
        out[what] = (f"no bound (group of {size} units)" if bound is None else
                     f"epsilon {bound['epsilon']:.4g}, delta {bound['delta']:.3g} "
                     f"(group of {size} unit{'s' if size != 1 else ''})")
    return out
