"""Local training of one scene: plain SGD or DP-SGD with Opacus (Poisson sampling).

The caller fixes the noise multiplier, clipping norm, privacy unit and noise source
(calibration and accounting live with the client's privacy account); this module only runs
the steps and reports what it ran, so that every step can be accounted for.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedscene.common import dp_norms  # noqa: F401  (registers the fast embedding norms)
from fedscene.common.algorithms import DISC
from fedscene.common.config import PrivacyConfig, TrainingConfig
from fedscene.common.data.scene import SceneDataset
from fedscene.common.privacy_units import PrivacyUnit
from fedscene.common.randomness import NoiseSource


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence, while a call trains, Opacus's notice that the secure RNG is off (the noise
    source is chosen on purpose, `common.randomness`) and torch's warning each step that a
    full backward hook fires with no input requiring grad (Opacus's hooks on the first
    layer)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        yield


def _reduce(per_unit: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-unit losses as Opacus asks for them: kept ("none"), summed or averaged."""
    if reduction == "none":
        return per_unit
    if reduction == "sum":
        return per_unit.sum()
    return per_unit.mean()


def _per_unit(per_example: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Example losses [B] as they are, or [shoppers, examples] folded into each shopper's
    weighted mean, so that Opacus clips one loss gradient per privacy unit."""
    return per_example if weights is None else (per_example * weights).sum(-1)


def example_losses(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """One loss per example from its candidates' logits [..., K] and labels [..., K].

    "softmax": cross-entropy of the labelled candidate against the example's sampled
    negatives (a sampled softmax: it ranks the positive above the others, as the
    full-catalogue metrics ask). "bce": binary cross-entropy summed over the candidates.
    """
    if kind == "softmax":
        return -(labels * torch.log_softmax(logits, dim=-1)).sum(-1)
    return nn.functional.binary_cross_entropy_with_logits(
        logits, labels, reduction="none").sum(-1)


class ExampleLoss(nn.Module):
    """The recommendation loss of `example_losses`, one loss per unit.

    With `reduction="none"` it returns one loss per privacy unit (an example, or a shopper's
    weighted mean over their examples), which is what Opacus's ghost clipping clips.
    """

    def __init__(self, kind: str = "softmax", reduction: str = "mean") -> None:
        super().__init__()
        self.kind, self.reduction = kind, reduction

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        per_example = example_losses(logits, labels, self.kind)
        return _reduce(_per_unit(per_example, weights), self.reduction)


class AlignedExampleLoss(nn.Module):
    """Per example: the recommendation loss (labelled scenes only) plus `weight` x the
    domain discriminator's cross-entropy on the example's user and candidate vectors.

    The discriminator minimises the second term; through the gradient-reversal layer the
    encoder maximises it. Both terms belong to the one example, so clipping per unit bounds
    the whole contribution of a unit.
    """

    def __init__(self, domain: int, weight: float, labelled: bool, kind: str = "softmax",
                 reduction: str = "mean") -> None:
        super().__init__()
        self.domain, self.weight, self.labelled = domain, weight, labelled
        self.kind, self.reduction = kind, reduction

    def forward(self, outputs: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        logits, domain_logits = outputs
        domains = domain_logits.shape[-1]
        target = torch.full((domain_logits[..., 0].numel(),), self.domain, dtype=torch.long)
        adversarial = nn.functional.cross_entropy(
            domain_logits.reshape(-1, domains), target, reduction="none").view(
            domain_logits.shape[:-1])
        per_example = self.weight * adversarial.mean(-1)
        if self.labelled:
            per_example = per_example + example_losses(logits, labels, self.kind)
        return _reduce(_per_unit(per_example, weights), self.reduction)


@dataclass(frozen=True)
class Alignment:
    """Domain-adversarial training of one scene: its domain class and loss weight.

    An unlabelled scene trains on its users' histories against random catalogue items (no
    next-item target), with the adversarial term alone.

    The discriminator (`anchored` prefixes) is held at its value from the start of the call
    for every step; its steps are averaged and applied at the end, `anchored_steps` times.
    A scene sees only its own domain, so a discriminator it trained step by step would learn
    to answer "mine" to everything and the average of such copies tells nothing apart. Held
    at one point, the scenes' averaged update is a descent step on the multi-domain loss
    over all their examples, as if the discriminator were trained centrally, and every scene
    moves it by the same number of steps whatever its size. The encoder meanwhile trains
    step by step against that fixed discriminator.
    """

    domain: int
    weight: float
    labelled: bool = True
    anchored: tuple[str, ...] = (DISC,)
    anchored_steps: float = 5.0


class _Anchor:
    """Holds some parameters at their starting value; applies their mean step x `steps`."""

    def __init__(self, model: nn.Module, prefixes: tuple[str, ...], steps: float) -> None:
        self.scale, self.taken = steps, 0
        self.params = {n: p for n, p in model.named_parameters()
                       if prefixes and n.startswith(prefixes) and p.requires_grad}
        self.start = {n: p.detach().clone() for n, p in self.params.items()}
        self.moved = {n: torch.zeros_like(p) for n, p in self.params.items()}

    def after_step(self) -> None:
        with torch.no_grad():
            for name, param in self.params.items():
                self.moved[name].add_(param - self.start[name])
                param.copy_(self.start[name])
        self.taken += 1

    def release(self) -> None:
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(self.start[name]
                            + self.moved[name] * (self.scale / max(self.taken, 1)))


# Opacus grad-sample modes in which a step probe's rows are tested to join each unit's
# materialised gradient (`param.grad_sample`) before clipping (tests/common/test_clipping.py).
# Ghost clipping computes only norms; functorch also materialises them, untested here.
MATERIALISING_MODES = ("ew", "hooks")


@dataclass(frozen=True)
class DPSettings:
    """The mechanism of one training call: noise, clipping and Opacus grad-sample mode."""

    noise_multiplier: float
    max_grad_norm: float
    grad_sample_mode: str = PrivacyConfig.model_fields["grad_sample_mode"].default


@dataclass(frozen=True)
class TrainReport:
    """What a training call ran: exactly what the accountant and the ledger must be told."""

    steps: int
    sample_rate: float
    units: int  # privacy units in the scene (n of the sample rate)
    mean_loss: float
    noise_source: str


@dataclass(frozen=True)
class Proximal:
    """FedProx term mu/2 * ||w - reference||^2, applied after clipping and noise."""

    reference: dict[str, torch.Tensor]
    mu: float


class StepProbe(Protocol):
    """An auditor's hooks into DP-SGD: the empirical audit's gradient canaries.

    `extra_units` more units are Poisson-sampled with the scene's own, by the same sampler
    at the same rate; a sampled extra unit contributes the per-unit gradient `gradients`
    gives it, which Opacus clips and noises with the rest; after every step `observe`
    sees the noised update, as an adversary watching every step would.
    """

    extra_units: int

    def gradients(self, sampled: np.ndarray, params: list[tuple[str, nn.Parameter]]
                  ) -> list[torch.Tensor]:
        """Per-unit gradients of the `sampled` extra units (0..extra_units-1): one tensor
        [len(sampled), *param.shape] per trainable parameter, in order."""

    def observe(self, params: list[tuple[str, nn.Parameter]], batch_size: float) -> None:
        """One step's release: each parameter's `.grad` holds the noised sum of clipped
        per-unit gradients divided by `batch_size` (the expected batch size)."""


def sample_rate_and_steps(units: int, batch_size: int, epochs: float) -> tuple[float, int]:
    """Poisson sample rate and steps for `epochs` passes over `units` privacy units.

    The rate is 1 / ceil(units / batch_size), the one Opacus's DPDataLoader draws with, so
    the ledger records the rate that actually ran.
    """
    rate = 1.0 / math.ceil(max(units, 1) / batch_size)
    return rate, max(1, int(round(epochs / rate)))


def _unit_loader(units: int, batch_size: int, generator: torch.Generator) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(units)), batch_size=min(batch_size, units),
                      shuffle=True, generator=generator)


def _criterion(alignment: Alignment | None, kind: str) -> nn.Module:
    if alignment is None:
        return ExampleLoss(kind)
    return AlignedExampleLoss(alignment.domain, alignment.weight, alignment.labelled, kind)


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                 dp: DPSettings, criterion: nn.Module, noise: torch.Generator):
    """Opacus's DP-SGD over `model`: Poisson sampling with the loader's generator, noise from
    `noise`. Returns (module, optimizer, criterion, loader) in every grad-sample mode."""
    engine = PrivacyEngine(accountant="prv")  # accounting is the caller's; this one is unused
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, criterion=criterion,
            noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
            poisson_sampling=True, grad_sample_mode=dp.grad_sample_mode,
            noise_generator=noise,
        )
    if dp.grad_sample_mode == "ghost":
        return made
    module, optimizer, loader = made
    return module, optimizer, criterion, loader


@_quiet()
def train_local(model: nn.Module, dataset: SceneDataset, negatives: int,
                training: TrainingConfig, *, epochs: float, unit: PrivacyUnit,
                randomness: NoiseSource, trainable: tuple[str, ...] = (),
                dp: DPSettings | None = None, proximal: Proximal | None = None,
                alignment: Alignment | None = None, probe: StepProbe | None = None
                ) -> TrainReport:
    """Train `model` in place for `epochs` passes over the scene's privacy units.

    `unit` decides what is sampled and clipped as one contribution (a shopper or an
    example); `randomness` supplies the noise, the Poisson sampling, the choice of a
    shopper's examples and each example's `negatives` sampled items (secret unless the
    config asked for reproducible noise). Only
    parameters under `trainable` prefixes (all when empty) change. With `alignment` the
    model must hold a discriminator and the loss gains the adversarial term. `probe` (the
    empirical audit's, DP in a materialising mode only) adds its units to the sampling.
    Returns what ran, for the accountant and the ledger.
    """
    if probe is not None and (dp is None or dp.grad_sample_mode not in MATERIALISING_MODES):
        raise ValueError(f"a step probe needs DP-SGD with a grad_sample_mode in "
                         f"{MATERIALISING_MODES}")
    own = unit.count(dataset)
    units = own + (probe.extra_units if probe else 0)
    rate, steps = sample_rate_and_steps(units, training.batch_size, epochs)
    work = copy.deepcopy(model)  # Opacus hooks stay on the copy, never on the caller's model
    work.train()
    work.return_domains = alignment is not None
    for name, param in work.named_parameters():
        param.requires_grad_(not trainable or name.startswith(trainable))
    named = [(n, p) for n, p in work.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    optimizer = torch.optim.SGD(params, lr=training.learning_rate, momentum=training.momentum)
    loader = _unit_loader(units, training.batch_size, randomness.sampling)
    criterion = _criterion(alignment, training.loss)
    labelled = alignment is None or alignment.labelled
    anchor = (_Anchor(work, alignment.anchored, alignment.anchored_steps) if alignment
              else _Anchor(work, (), 0.0))
    module: nn.Module = work
    if dp is not None:
        module, optimizer, criterion, loader = make_private(work, optimizer, loader, dp,
                                                            criterion, randomness.noise)
    module.train()
    losses, done = [], 0
    while done < steps:
        for (index,) in loader:
            if done == steps:
                break
            done += 1
            optimizer.zero_grad(set_to_none=True)
            index = index.numpy()
            sampled, extra = ((index[index < own], index[index >= own] - own) if probe
                              else (index, index[:0]))
            if len(sampled):
                batch = unit.batch(dataset, sampled, randomness.examples, labelled, negatives)
                loss = criterion(module(*batch.inputs), batch.labels, batch.weights)
                loss.backward()
                losses.append(float(loss.item()))
            if probe is not None and len(extra):
                _add_unit_gradients(named, probe.gradients(extra, named))
            if len(sampled) or (probe is not None and len(extra)):
                _step(optimizer, work, proximal, dp is not None)
            else:  # an empty Poisson batch still takes a (pure noise) step
                _noise_only_step(optimizer, params)
            if probe is not None:
                probe.observe(named, optimizer.expected_batch_size)
            anchor.after_step()
    anchor.release()
    work.return_domains = False
    model.load_state_dict(work.state_dict())
    return TrainReport(steps=done, sample_rate=rate, units=units,
                       mean_loss=float(np.mean(losses)) if losses else 0.0,
                       noise_source=randomness.description)


def _add_unit_gradients(named: list[tuple[str, nn.Parameter]],
                        rows: list[torch.Tensor]) -> None:
    """Append per-unit gradient rows to what Opacus computed (or stand alone when
    no scene unit was sampled), so that they are clipped and noised with the rest."""
    for (_, param), extra in zip(named, rows, strict=True):
        present = getattr(param, "grad_sample", None)
        param.grad_sample = extra if present is None else torch.cat([present, extra])


def _add_proximal(model: nn.Module, proximal: Proximal) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.grad is not None and name in proximal.reference:
                param.grad.add_(param - proximal.reference[name], alpha=proximal.mu)


def _step(optimizer, model: nn.Module, proximal: Proximal | None, private: bool) -> None:
    if proximal is None or proximal.mu == 0.0:
        optimizer.step()
        return
    if private:
        # The proximal gradient is data-independent: add it after clipping and noise.
        if optimizer.pre_step():
            _add_proximal(model, proximal)
            optimizer.original_optimizer.step()
        return
    _add_proximal(model, proximal)
    optimizer.step()


def _noise_only_step(optimizer, params: list[torch.Tensor]) -> None:
    """DP-SGD on an empty batch: the update is the noise alone, scaled as usual."""
    if not hasattr(optimizer, "original_optimizer"):
        return
    std = optimizer.noise_multiplier * optimizer.max_grad_norm
    with torch.no_grad():
        for param in params:
            noise = torch.normal(0.0, std, size=param.shape, generator=optimizer.generator)
            param.grad = noise / optimizer.expected_batch_size
    optimizer.original_optimizer.step()
