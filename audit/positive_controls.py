"""Deliberately broken mechanisms: the empirical audit's positive controls.

Each control runs the scene's real training with one flaw the ledger cannot show, so that
a test or a benchmark can check that the audit catches it at a given claim and m:

- `noise-off`: the steps add no noise while the ledger records the calibrated noise;
- `clipping-off`: per-unit gradients are summed unclipped, the noise still scaled to the
  clipping norm;
- `seeded-noise`: noise drawn from the run's seed and round, which the coordinator sent
  (`privacy.reproducible_noise`);
- `example-unit`: example-level DP-SGD (`privacy.unit = "example"`), audited with shopper
  canaries.

`real` is the mechanism as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from opacus.optimizers import optimizer as opacus_optimizer

from fedscene.audit.empirical import EmpiricalAudit, run_empirical_audit
from fedscene.client import task
from fedscene.common.config import load_config
from fedscene.common.training import DPSettings


@contextmanager
def noise_off() -> Iterator[None]:
    """Training calls get noise multiplier 0; the plan and the ledger keep the real one."""
    def silent(noise_multiplier: float, max_grad_norm: float, mode: str) -> DPSettings:
        return DPSettings(0.0, max_grad_norm, mode)

    with mock.patch.object(task, "DPSettings", silent):
        yield


@contextmanager
def clipping_off() -> Iterator[None]:
    """Opacus's optimizer sums per-unit gradients without clipping them."""
    def sum_unclipped(self) -> None:
        for param in self.params:
            summed = self._get_flat_grad_sample(param).sum(0)
            param.summed_grad = (summed if param.summed_grad is None
                                 else param.summed_grad + summed)
        for param in self.params:
            opacus_optimizer._mark_as_processed(param.grad_sample)

    with mock.patch.object(opacus_optimizer.DPOptimizer, "clip_and_accumulate",
                           sum_unclipped):
        yield


@dataclass(frozen=True)
class Control:
    """A mechanism to audit: config overrides and code patched while it trains."""

    overrides: tuple[str, ...] = ()
    patch: Callable[[], AbstractContextManager[None]] = nullcontext


CONTROLS: dict[str, Control] = {
    "real": Control(),
    "noise-off": Control(patch=noise_off),
    "clipping-off": Control(patch=clipping_off),
    "seeded-noise": Control(overrides=("privacy.reproducible_noise=true",)),
    "example-unit": Control(overrides=("privacy.unit=example",)),
}


def audit_control(name: str, config_path: Path, overrides: list[str], scene: str,
                  **audit: Any) -> EmpiricalAudit:
    """The empirical audit of `scene` under the config at `config_path` with `overrides`,
    trained with the mechanism `name` of `CONTROLS`; `audit` goes to `run_empirical_audit`."""
    control = CONTROLS[name]
    config = load_config(config_path, [*overrides, *control.overrides])
    with control.patch():
        return run_empirical_audit(config, scene, **audit)
