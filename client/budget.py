"""A scene's privacy budget: calibrated once, enforced before every round, and ledgered.

The noise multiplier is calibrated for the whole planned training (rounds x steps per round
at the scene's Poisson sample rate) so the budget is reached at the last planned round. The
spend is recomputed from the ledger, the durable record of every step ever taken, so it is
cumulative across rounds, runs and restarts; it is never a per-round figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fedscene.client.state import SceneState
from fedscene.common.accounting import (
    MECHANISM,
    NEIGHBOURING,
    PRIVACY_UNIT,
    SAMPLING,
    accountant_versions,
    calibrate_noise,
    calibrate_noise_after,
    epsilon,
)
from fedscene.common.config import PrivacyConfig
from fedscene.common.errors import FedsceneError
from fedscene.common.ledger import append_entry, quarantine_torn_tail, read_ledger

TOLERANCE = 1e-9


@dataclass(frozen=True)
class PrivacyPlan:
    """The budget and the mechanism fixed for it."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    planned_steps: int
    accountant: str
    records: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PrivacyPlan:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


def scene_delta(privacy: PrivacyConfig, scene: str, records: int) -> float:
    """The configured delta, or 0.1 / records (comfortably below 1 / n)."""
    budget = privacy.budget_for(scene)
    return budget.delta if budget.delta > 0 else 0.1 / max(records, 1)


def load_or_create_plan(state: SceneState, privacy: PrivacyConfig, records: int,
                        sample_rate: float, planned_steps: int) -> PrivacyPlan:
    """The scene's existing plan, or a new one calibrated for `planned_steps`.

    An existing plan is kept (the budget continues across runs) unless the configured budget
    or clipping changed, which is refused: a budget is not silently reset.
    """
    budget = privacy.budget_for(state.scene)
    delta = scene_delta(privacy, state.scene, records)
    existing = state.plan()
    if existing is not None:
        plan = PrivacyPlan.from_dict(existing)
        changed = [name for name, new in (("epsilon", budget.epsilon), ("delta", delta),
                                          ("max_grad_norm", privacy.max_grad_norm))
                   if abs(getattr(plan, name) - new) > 1e-12]
        if changed:
            raise FedsceneError(
                f"{state.directory}: the scene's privacy plan has {', '.join(changed)} "
                f"different from the config; a budget cannot be changed in place. Use a new "
                f"state directory or restore the original privacy settings")
        return plan
    sigma = calibrate_noise(budget.epsilon, delta, sample_rate, planned_steps,
                            privacy.accountant)
    plan = PrivacyPlan(epsilon=budget.epsilon, delta=delta, noise_multiplier=sigma,
                       sample_rate=sample_rate, max_grad_norm=privacy.max_grad_norm,
                       planned_steps=planned_steps, accountant=privacy.accountant,
                       records=records)
    state.save_plan(plan.__dict__ | {"created": time.time()})
    return plan


def plan_remaining(state: SceneState, privacy: PrivacyConfig, records: int,
                   sample_rate: float, steps: int, history: list[tuple[float, float, int]]
                   ) -> PrivacyPlan:
    """A plan for `steps` more steps that spends what the scene's budget has left after
    `history` (its earlier training, at the delta its plan fixed). With no history it is
    the scene's ordinary plan."""
    existing = state.plan()
    if not history or existing is None:
        return load_or_create_plan(state, privacy, records, sample_rate, steps)
    earlier = PrivacyPlan.from_dict(existing)
    budget = privacy.budget_for(state.scene).epsilon
    try:
        sigma = calibrate_noise_after(history, budget, earlier.delta, sample_rate, steps,
                                      privacy.accountant)
    except ValueError as error:
        raise FedsceneError(f"{state.directory}: scene {state.scene} cannot train {steps} "
                            f"more steps within epsilon {budget}: {error}") from None
    return PrivacyPlan(epsilon=budget, delta=earlier.delta, noise_multiplier=sigma,
                       sample_rate=sample_rate, max_grad_norm=privacy.max_grad_norm,
                       planned_steps=steps, accountant=privacy.accountant, records=records)


def spent_history(state: SceneState) -> list[tuple[float, float, int]]:
    """Every (noise, sample rate, steps) in the verified ledger.

    A torn last line (a crash mid-append; its training was never saved or sent) is moved
    aside; any other damage stops training, since the spend could not be trusted.
    """
    quarantine_torn_tail(state.ledger_path)
    ledger = read_ledger(state.ledger_path)
    if not ledger.intact:
        raise FedsceneError("; ".join(ledger.problems) + ": the privacy ledger is damaged; "
                            "run `fedscene audit` on the state directory")
    expected = state.status().get("ledger_head")
    if expected and expected not in {e["hash"] for e in ledger.entries}:
        raise FedsceneError(f"{state.ledger_path}: the entry the scene's state was saved "
                            f"with is missing (ledger truncated); run `fedscene audit`")
    return [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in ledger.entries]


def would_exceed(plan: PrivacyPlan, history: list[tuple[float, float, int]], steps: int
                 ) -> tuple[bool, float]:
    """Whether `steps` more steps pass the budget, and the epsilon they would reach."""
    after = epsilon(history + [(plan.noise_multiplier, plan.sample_rate, steps)], plan.delta,
                    plan.accountant)
    return after > plan.epsilon + TOLERANCE, after


def record_training(state: SceneState, plan: PrivacyPlan, *, run_id: str, round_: int,
                    algorithm: str, steps: int, history: list[tuple[float, float, int]],
                    extra: dict[str, Any], epsilon_after: float | None = None
                    ) -> dict[str, Any]:
    """Append the ledger entry of a training call that ran `steps` steps.

    `epsilon_after` is the composition's epsilon when the caller already computed it (the
    budget check does), to avoid a second PRV evaluation.
    """
    composed = history + [(plan.noise_multiplier, plan.sample_rate, steps)]
    if epsilon_after is None:
        epsilon_after = epsilon(composed, plan.delta, plan.accountant)
    fields = {
        "run_id": run_id,
        "round": round_,
        "scene": state.scene,
        "algorithm": algorithm,
        "mechanism": MECHANISM,
        "steps": steps,
        "sample_rate": plan.sample_rate,
        "sampling": SAMPLING,
        "noise_multiplier": plan.noise_multiplier,
        "max_grad_norm": plan.max_grad_norm,
        "privacy_unit": PRIVACY_UNIT,
        "neighbouring": NEIGHBOURING,
        "delta": plan.delta,
        "budget_epsilon": plan.epsilon,
        "accountant": plan.accountant,
        "accountant_versions": accountant_versions(),
        "epsilon": epsilon_after,
        "epsilon_rdp": epsilon(composed, plan.delta, "rdp"),
        "records": plan.records,
        "time": time.time(),
    } | extra
    return append_entry(state.ledger_path, fields)
