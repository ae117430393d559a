"""Canaries of the one-run privacy audit (Steinke, Nasr & Jagielski 2023), one per shopper.

Each of m canaries is included in training with probability 1/2 by a coin only the auditor
knows; the adversary then scores every canary, and the better included ones score above
excluded ones, the larger the epsilon the guesses prove. A canary follows the privacy unit:
it is a shopper, who is one unit under the shopper unit and as many units as they have
examples under the example unit.

- `GradientCanaries` (white-box): the strongest adversary, who sees every noised update of
  every step. A canary shopper's gradient is a Dirac at a coordinate of the trained
  parameters, longer than the clipping norm (clipping must bring it back); its score is
  the likelihood ratio of the noised updates at its coordinate, step by step ("sampled
  with probability q and adding the clipped canary" against "absent"). The adversary also
  knows every seed the
  coordinator sent: it regenerates the noise it would have drawn from them and, when that
  explains the updates (a test that does not look at which canaries were included), scores
  the updates less that noise.
- `ShopperCanaries` (black-box): only the final model. A canary shopper bought `examples`
  random items after the same random history; the score is how much the final model's
  logit of those items after that history rose from the initial model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from fedscene.common.batches import gather_inputs
from fedscene.common.data.scene import SceneDataset
from fedscene.common.errors import ConfigError
from fedscene.common.randomness import reproducible_source

# The replay counts as explaining the updates when it removes this share of their power.
EXPLAINED = 0.75


def coin_flips(m: int, rng: np.random.Generator) -> np.ndarray:
    """Which of `m` canaries are included: independent fair coins."""
    return rng.random(m) < 0.5


@dataclass
class GradientCanaries:
    """Dirac gradient canaries, as a `StepProbe` of `train_local`.

    Parameters: `coordinates` each canary's (parameter name, flat index); `included` the
    coins; `units_per_canary` the units one canary shopper is under the scene's unit;
    `norm` the canary gradient's L2 norm (absolute: the caller picks it above the clipping
    norm, so that clipping must bring it back).
    """

    coordinates: list[tuple[str, int]]
    included: np.ndarray
    units_per_canary: int
    norm: float
    replay: torch.Generator | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.unit_canary = np.repeat(np.flatnonzero(self.included), self.units_per_canary)
        self._steps: list[np.ndarray] = []     # per step: each canary's noised update
        self._replayed: list[np.ndarray] = []  # per step: the replayed standard normals
        self._by_param: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        names = np.array([name for name, _ in self.coordinates])
        flat = np.array([index for _, index in self.coordinates], dtype=np.int64)
        for name in set(names.tolist()):
            rows = np.flatnonzero(names == name)
            self._by_param[name] = (rows, flat[rows])

    @classmethod
    def draw(cls, model: nn.Module, m: int, units_per_canary: int, norm: float,
             rng: np.random.Generator) -> GradientCanaries:
        """`m` canaries at distinct coordinates drawn uniformly over the model's
        parameters."""
        params = [(n, p.numel()) for n, p in model.named_parameters()]
        sizes = np.array([size for _, size in params])
        picks = rng.choice(int(sizes.sum()), size=m, replace=False)
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        which = np.searchsorted(starts, picks, side="right") - 1
        coordinates = [(params[w][0], int(p - starts[w])) for w, p in zip(which, picks,
                                                                             strict=True)]
        return cls(coordinates, coin_flips(m, rng), units_per_canary, norm)

    @property
    def extra_units(self) -> int:
        return len(self.unit_canary)

    def replay_seed(self, seed: int | None) -> None:
        """The seed the adversary knows for the next training call (None: it knows none)."""
        self.replay = None if seed is None else reproducible_source(seed).noise

    def gradients(self, sampled: np.ndarray, params: list[tuple[str, nn.Parameter]]
                  ) -> list[torch.Tensor]:
        rows = {name: torch.zeros((len(sampled), param.numel()), dtype=param.dtype)
                for name, param in params}
        for slot, canary in enumerate(self.unit_canary[sampled]):
            name, index = self.coordinates[canary]
            if name in rows:  # a parameter this phase trains
                rows[name][slot, index] = self.norm
        return [rows[name].view(len(sampled), *param.shape) for name, param in params]

    def observe(self, params: list[tuple[str, nn.Parameter]], batch_size: float) -> None:
        step = np.full(len(self.coordinates), np.nan)
        replayed = np.zeros(len(self.coordinates))
        for name, param in params:
            noise = (torch.normal(0.0, 1.0, size=param.shape, generator=self.replay)
                     if self.replay is not None else None)
            if name not in self._by_param or param.grad is None:
                continue
            rows, flat = self._by_param[name]
            step[rows] = param.grad.detach().reshape(-1)[flat].numpy() * batch_size
            if noise is not None:
                replayed[rows] = noise.reshape(-1)[flat].numpy()
        self._steps.append(step)
        self._replayed.append(replayed)

    def scores(self, noise_std: float, clip: float, sample_rate: float
               ) -> tuple[np.ndarray, bool]:
        """Each canary's score, and whether the replayed noise explained the updates.
        `noise_std` (> 0), `clip` and `sample_rate` are the ledger's, as the adversary
        reads them.

        The score is the log-likelihood ratio of the canary's observed coordinate over the
        steps, "sampled with probability q, adding the clipped canary `clip`" against
        "absent", under Gaussian noise of `noise_std` (the ledger's): per step
        log(1 - q + q exp((x clip - clip^2 / 2) / noise_std^2)). It weighs the steps where
        a canary stands out instead of summing the noise of every step it sat out. When
        the replayed noise explains the updates, x is the update less that noise.
        """
        observed = np.nan_to_num(np.array(self._steps).reshape(-1, len(self.coordinates)))
        replayed = np.array(self._replayed).reshape(observed.shape)
        residual = observed - noise_std * replayed
        explained = bool(noise_std > 0 and np.any(replayed) and
                         np.sum(residual ** 2) < (1 - EXPLAINED) * np.sum(observed ** 2))
        x = residual if explained else observed
        exponent = (x * clip - clip ** 2 / 2) / noise_std ** 2
        per_step = np.logaddexp(np.log1p(-sample_rate), np.log(sample_rate) + exponent)
        return per_step.sum(axis=0), explained


@dataclass(frozen=True)
class ShopperCanaries:
    """Input-space canary shoppers: each bought `targets[i]` after `histories[i]`."""

    histories: np.ndarray  # [m, history_length]
    targets: np.ndarray    # [m, examples]
    included: np.ndarray

    @classmethod
    def draw(cls, dataset: SceneDataset, m: int, examples: int, rng: np.random.Generator
             ) -> ShopperCanaries:
        items = dataset.ranked_items
        length = dataset.train_history.shape[1]
        if len(items) < length + examples:
            raise ConfigError(f"scene {dataset.scene!r} sells {len(items)} items: a canary "
                              f"shopper of {examples} examples after a history of {length} "
                              f"needs {length + examples}; lower --examples")
        histories = np.stack([rng.choice(items, size=length, replace=False) for _ in range(m)])
        targets = np.stack([rng.choice(np.setdiff1d(items, h), size=examples, replace=False)
                            for h in histories])
        return cls(histories, targets, coin_flips(m, rng))

    def add_to(self, dataset: SceneDataset, time: np.datetime64) -> SceneDataset:
        """The scene with the included canaries as new shoppers, their rows at `time`."""
        chosen = np.flatnonzero(self.included)
        examples = self.targets.shape[1]
        users = np.repeat(dataset.n_users + np.arange(len(chosen)), examples)
        items = self.targets[chosen].reshape(-1)
        histories = np.repeat(self.histories[chosen], examples, axis=0)
        times = np.full(len(items), time, dtype=dataset.train_time.dtype)
        return replace(
            dataset, n_users=dataset.n_users + len(chosen),
            train_user=np.concatenate([dataset.train_user, users]),
            train_item=np.concatenate([dataset.train_item, items]),
            train_time=np.concatenate([dataset.train_time, times]),
            train_history=np.concatenate([dataset.train_history, histories]))

    def logits(self, model: nn.Module, dataset: SceneDataset) -> np.ndarray:
        """The model's logits of each canary's items after its history: [m, examples]."""
        model.eval()
        with torch.no_grad():
            return model(*gather_inputs(dataset, self.targets, self.histories)).numpy()

    def scores(self, initial: nn.Module, final: nn.Module, dataset: SceneDataset
               ) -> np.ndarray:
        """Each canary's mean logit gain on its items from the initial to the final model
        (the adversary knows both: the initial one is built from the run's seed)."""
        return (self.logits(final, dataset) - self.logits(initial, dataset)).mean(axis=1)
