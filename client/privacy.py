"""A scene's privacy account: the one owner of its plan, its ledger and its spend.

Client training, transfer adaptation, unlabelled alignment and the harness's privacy summary
all go through `PrivacyAccount`; nothing else reads or writes `privacy.json` or appends to
the ledger. The audit reads the ledger on its own, to recompute it independently.

- **Lifetime budget.** A scene has one (epsilon, delta) for its lifetime. Training happens in
  campaigns: a campaign's noise multiplier is calibrated once, for its whole planned
  training, so that the composition of everything the scene ever ran reaches the campaign's
  target (the lifetime budget, or `campaign_epsilon` of it) at the last planned step.
- **Growing data.** When the scene's data, sample rate or unit changed since the plan was
  made, a new campaign starts: its noise is calibrated for what remains of the lifetime
  budget at the new rate, and the ledger continues.
- **Cumulative spend.** The spend is the composition of every mechanism record in the
  verified ledger, never a per-round figure; it survives restarts because the ledger does.
- **Releases.** Anything else that leaves the scene (loss, metrics, dataset size) is either
  not sent or ledgered as released without DP.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedscene.client.state import PLAN_FILE, STATUS_FILE, SceneState
from fedscene.common.accounting import (
    MECHANISM,
    SAMPLING,
    accountant_versions,
    calibrate_noise,
    calibrate_noise_after,
    epsilon,
    gaussian_sigma,
)
from fedscene.common.config import PrivacyConfig
from fedscene.common.errors import FedsceneError
from fedscene.common.features import PUBLIC_INPUTS
from fedscene.common.ledger import (
    LEDGER_FILE,
    RELEASE,
    TRAINING,
    append_entry,
    quarantine_torn_tail,
    read_ledger,
)
from fedscene.common.privacy_units import PrivacyUnit, meaning
from fedscene.common.training import TrainReport

# How a one-time release of counts is sampled, in its ledger entry: what tells it apart.
RELEASED_ONCE = "none: every unit counted"


class BudgetSpent(FedsceneError):
    """The lifetime budget (or the campaign's target) leaves nothing for more training."""


TOLERANCE = 1e-9
# A budget with less than this left counts as spent: calibration reaches a target to within
# 0.01 (Opacus's tolerance), so a campaign planned to the end leaves crumbs below it.
SPENT_MARGIN = 0.02
WITHOUT_DP = "released without DP"

Mechanism = tuple[float, float, int]  # (noise multiplier, sample rate, steps)


@dataclass(frozen=True)
class PrivacyPlan:
    """One campaign's mechanism: the lifetime budget, the campaign's target, and the noise
    calibrated for its planned steps at its sample rate over its privacy units."""

    epsilon: float  # lifetime budget
    delta: float
    target_epsilon: float  # cumulative epsilon this campaign may reach
    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    planned_steps: int
    accountant: str
    unit: str
    units: int
    campaign: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PrivacyPlan:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


def default_delta(units: int) -> float:
    """min(1e-5, 0.1 / units): well below 1 / n, as delta must be, and never large for a
    scene with few units (a transfer target adapting on a handful of shoppers)."""
    return min(1e-5, 0.1 / max(units, 1))


class PrivacyAccount:
    """The privacy state of one scene's state directory.

    Construct one per training call (or per evaluation that releases something): it reads
    and verifies the ledger once. Parameters: `state` the scene's directory; `privacy` the
    run's privacy section (the scene's budget and mechanism settings).
    """

    def __init__(self, state: SceneState, privacy: PrivacyConfig) -> None:
        self.state = state
        self.privacy = privacy
        self.entries = self._verified_entries()
        raw = state.plan()
        self.plan: PrivacyPlan | None = PrivacyPlan.from_dict(raw) if raw else None

    @classmethod
    def continued(cls, source: SceneState, state: SceneState, privacy: PrivacyConfig
                  ) -> PrivacyAccount:
        """An account in `state` that continues `source`'s ledger and plan (a target's
        adaptation after it joined federation): the copy keeps the chain, so the spend
        composes across both."""
        state.directory.mkdir(parents=True, exist_ok=True)
        for path in (source.ledger_path, source.directory / PLAN_FILE,
                     source.directory / STATUS_FILE):
            if path.exists():
                shutil.copy2(path, state.directory / path.name)
        return cls(state, privacy)

    def _verified_entries(self) -> list[dict[str, Any]]:
        """The verified ledger. A torn last line (a crash mid-append; its training was
        never saved nor sent) is moved aside; any other damage stops training, since the
        spend could not be trusted."""
        quarantine_torn_tail(self.state.ledger_path)
        ledger = read_ledger(self.state.ledger_path)
        if not ledger.intact:
            raise FedsceneError("; ".join(ledger.problems) + ": the privacy ledger is damaged; "
                                "run `fedscene audit` on the state directory")
        expected = self.state.status().get("ledger_head")
        if expected and expected not in {e["hash"] for e in ledger.entries}:
            raise FedsceneError(f"{self.state.ledger_path}: the entry the scene's state was "
                                f"saved with is missing (ledger truncated); run "
                                f"`fedscene audit`")
        return ledger.entries

    @property
    def history(self) -> list[Mechanism]:
        """Every mechanism the scene ever ran under its budget."""
        return [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in self.entries
                if e.get("kind", TRAINING) == TRAINING]

    def plan_campaign(self, unit: PrivacyUnit, units: int, sample_rate: float,
                      planned_steps: int) -> PrivacyPlan:
        """The current campaign's plan, or a new campaign calibrated for `planned_steps`.

        The plan continues while the data (`units`, `sample_rate`), the unit and the target
        are as planned. When they changed, a new campaign spends what remains of the
        lifetime budget. A changed budget, delta, clipping norm or unit is refused: a
        budget is not reset in place.
        """
        budget = self.privacy.budget_for(self.state.scene)
        target = budget.campaign_epsilon or budget.epsilon
        current = self.plan
        if current is not None:
            self._refuse_changes(current, unit, budget.epsilon, budget.delta)
            if (current.units, current.sample_rate, current.target_epsilon) == (
                    units, sample_rate, target):
                return current
        delta = current.delta if current else (budget.delta or default_delta(units))
        history = self.history
        spent = epsilon(history, delta, self.privacy.accountant) if history else 0.0
        if spent >= target - SPENT_MARGIN:
            key = ("privacy.scenes." + self.state.scene + ".campaign_epsilon"
                   if budget.campaign_epsilon else "privacy.epsilon")
            raise BudgetSpent(
                f"{self.state.directory}: scene {self.state.scene!r} has spent epsilon "
                f"{spent:.4g} of the {target:g} that {key} allows; nothing is left for a new "
                f"campaign. Raise {key} only if the lifetime budget allows it, or stop "
                f"training this scene")
        try:
            sigma = (calibrate_noise_after(history, target, delta, sample_rate, planned_steps,
                                           self.privacy.accountant) if history else
                     calibrate_noise(target, delta, sample_rate, planned_steps,
                                     self.privacy.accountant))
        except ValueError as error:
            raise FedsceneError(f"{self.state.directory}: scene {self.state.scene!r} cannot "
                                f"plan {planned_steps} steps within epsilon {target:g}: "
                                f"{error}") from None
        plan = PrivacyPlan(epsilon=budget.epsilon, delta=delta, target_epsilon=target,
                           noise_multiplier=sigma, sample_rate=sample_rate,
                           max_grad_norm=self.privacy.max_grad_norm,
                           planned_steps=planned_steps, accountant=self.privacy.accountant,
                           unit=unit.name, units=units,
                           campaign=(current.campaign + 1) if current else 1)
        self.state.save_plan(asdict(plan) | {"created": time.time()})
        self.plan = plan
        return plan

    def _refuse_changes(self, plan: PrivacyPlan, unit: PrivacyUnit, lifetime: float,
                        delta: float) -> None:
        changed = [name for name, old, new in (
            ("epsilon", plan.epsilon, lifetime),
            ("max_grad_norm", plan.max_grad_norm, self.privacy.max_grad_norm))
            if abs(old - new) > 1e-12]
        if plan.accountant != self.privacy.accountant:
            changed.append("accountant")
        if delta and abs(plan.delta - delta) > 1e-15:
            changed.append("delta")
        if plan.unit != unit.name:
            changed.append("unit")
        if changed:
            raise FedsceneError(
                f"{self.state.directory}: the scene's privacy plan has {', '.join(changed)} "
                f"different from the config (privacy.{changed[0]}); a budget cannot be "
                f"changed in place. Use a new state directory or restore the original "
                f"privacy settings")

    def would_exceed(self, steps: int) -> tuple[bool, float]:
        """Whether `steps` more steps of the current plan pass its target, and the epsilon
        they would reach."""
        plan = self._require_plan()
        after = epsilon(self.history + [(plan.noise_multiplier, plan.sample_rate, steps)],
                        plan.delta, plan.accountant)
        return after > plan.target_epsilon + TOLERANCE, after

    def _require_plan(self) -> PrivacyPlan:
        if self.plan is None:
            raise FedsceneError(f"{self.state.directory}: no privacy plan yet; plan a "
                                f"campaign before training")
        return self.plan

    def record_training(self, report: TrainReport, unit: PrivacyUnit, groups: dict[str, int],
                        *, run_id: str, round_: int, algorithm: str, extra: dict[str, Any],
                        epsilon_after: float | None = None) -> dict[str, Any]:
        """Append the ledger entry of a DP training call: its mechanism, unit, noise source,
        the cumulative epsilon after it, and what that means for a purchase and a shopper.

        `groups` is the unit's `group_sizes` for this scene; `epsilon_after` the
        composition's epsilon when the caller already computed it (the budget check does).
        """
        plan = self._require_plan()
        entry = self._append_mechanism(  # it ran, so it is ledgered whatever it spent
            (plan.noise_multiplier, report.sample_rate, report.steps), plan.delta, unit,
            groups, epsilon_after, {
                "run_id": run_id, "round": round_, "algorithm": algorithm,
                "campaign": plan.campaign, "mechanism": MECHANISM, "sampling": SAMPLING,
                "max_grad_norm": plan.max_grad_norm, "noise_source": report.noise_source,
                "units": report.units, "budget_epsilon": plan.epsilon,
                "campaign_epsilon": plan.target_epsilon} | extra)
        epsilon_after = entry["epsilon"]
        if epsilon_after > plan.target_epsilon + 0.01:  # beyond calibration's tolerance
            raise FedsceneError(f"{self.state.directory}: a training call passed the budget "
                                f"({epsilon_after:.4g} > {plan.target_epsilon:g}); callers "
                                f"must check would_exceed before training")
        return entry

    def delta_for(self, units: int) -> float:
        """The scene's delta: the plan's, else the budget's, else the default for `units`."""
        if self.plan is not None:
            return self.plan.delta
        return self.privacy.budget_for(self.state.scene).delta or default_delta(units)

    def room_for(self, mechanism: Mechanism, units: int) -> bool:
        """Whether one more `mechanism` fits under the current target (the campaign's, else
        the lifetime budget) with more than `SPENT_MARGIN` left after it."""
        after = epsilon(self.history + [mechanism], self.delta_for(units),
                        self.privacy.accountant)
        return after < self.target_epsilon() - SPENT_MARGIN

    def one_time_release(self, algorithm: str, share: float, units: int
                         ) -> tuple[float, float] | None:
        """(epsilon, noise multiplier at sensitivity 1) of a Gaussian release `algorithm`
        made once per scene at `share` of the target epsilon; None when the ledger already
        holds it (the ledger, not a model buffer, says so: a release that came out all
        zeros must not be made again each round) or it would leave training no room."""
        if self.has_entry(algorithm):
            return None
        release_epsilon = share * self.target_epsilon()
        noise_multiplier = gaussian_sigma(release_epsilon, self.delta_for(units), 1.0)
        if not self.room_for((noise_multiplier, 1.0, 1), units):
            return None
        return release_epsilon, noise_multiplier

    def ran_beyond_releases(self) -> bool:
        """Whether the ledger holds anything but one-time releases of counts (training
        above all): a one-time release after it would enter a campaign whose noise was
        calibrated without it."""
        return any(e.get("sampling") != RELEASED_ONCE for e in self.entries)

    def has_entry(self, algorithm: str) -> bool:
        """Whether the ledger holds an entry of `algorithm` (e.g. a release made once)."""
        return any(e.get("algorithm") == algorithm for e in self.entries)

    def target_epsilon(self) -> float:
        """The epsilon the current campaign may reach: the plan's, else the scene's campaign
        target or lifetime budget."""
        if self.plan is not None:
            return self.plan.target_epsilon
        budget = self.privacy.budget_for(self.state.scene)
        return budget.campaign_epsilon or budget.epsilon

    def record_counts(self, noise_multiplier: float, sensitivity: float, unit: PrivacyUnit,
                      units: int, groups: dict[str, int], *, released: str,
                      noise_source: str, run_id: str, round_: int, algorithm: str,
                      mechanism: str = "gaussian (bounded counts, released once)"
                      ) -> dict[str, Any]:
        """Ledger one Gaussian release of counts with L2 `sensitivity` and noise standard
        deviation `noise_multiplier` x `sensitivity`: as a mechanism it is one step of
        DP-SGD's with every unit sampled, so it composes with training in the same history
        and the audit recomputes it like any other entry. Call `room_for` first."""
        return self._append_mechanism((noise_multiplier, 1.0, 1), self.delta_for(units), unit,
                                      groups, None, {
            "run_id": run_id, "round": round_, "algorithm": algorithm,
            "campaign": self.plan.campaign if self.plan else 0,
            "mechanism": mechanism, "released": released,
            "sampling": RELEASED_ONCE, "max_grad_norm": sensitivity,
            "noise_source": noise_source, "units": units,
            "budget_epsilon": self.privacy.budget_for(self.state.scene).epsilon,
            "campaign_epsilon": self.target_epsilon()})

    def _append_mechanism(self, mechanism: Mechanism, delta: float, unit: PrivacyUnit,
                          groups: dict[str, int], spent: float | None,
                          fields: dict[str, Any]) -> dict[str, Any]:
        """Append a mechanism entry: what ran (`fields`) and what every mechanism entry
        records: the mechanism's numbers, the unit, the composition's epsilon (computed
        unless the caller passes `spent`) and RDP epsilon at `delta`, what that guarantees
        a purchase and a shopper, what was read as public (`features.PUBLIC_INPUTS`), and
        when."""
        composed = self.history + [mechanism]
        if spent is None:
            spent = epsilon(composed, delta, self.privacy.accountant)
        noise_multiplier, sample_rate, steps = mechanism
        return self._append({
            "kind": TRAINING, "scene": self.state.scene, "steps": steps,
            "sample_rate": sample_rate, "noise_multiplier": noise_multiplier,
            "unit": unit.name, "privacy_unit": unit.description,
            "neighbouring": unit.neighbouring, "group_sizes": groups, "delta": delta,
            "accountant": self.privacy.accountant, "accountant_versions": accountant_versions(),
            "epsilon": spent, "epsilon_rdp": epsilon(composed, delta, "rdp"),
            "guarantee": meaning(spent, delta, groups), "public": PUBLIC_INPUTS,
            "time": time.time()} | fields)

    def record_without_dp(self, report: TrainReport, *, run_id: str, round_: int,
                          algorithm: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Ledger a training call that ran without DP (privacy disabled): infinite epsilon,
        as it is."""
        return self._append({
            "kind": TRAINING, "run_id": run_id, "round": round_, "scene": self.state.scene,
            "algorithm": algorithm, "mechanism": "none (privacy disabled)",
            "steps": report.steps, "sample_rate": report.sample_rate, "sampling": SAMPLING,
            "noise_multiplier": 0.0, "max_grad_norm": 0.0, "units": report.units,
            "noise_source": "none (no noise drawn)", "delta": 0.0,
            "budget_epsilon": float("inf"), "accountant": "none",
            "epsilon": float("inf"), "epsilon_rdp": float("inf"), "time": time.time(),
        } | extra)

    def record_release(self, released: list[str], *, run_id: str, round_: int,
                       reason: str) -> dict[str, Any] | None:
        """Ledger values that leave the scene outside the DP mechanism (nothing to ledger
        when `released` is empty)."""
        if not released:
            return None
        return self._append({"kind": RELEASE, "run_id": run_id, "round": round_,
                             "scene": self.state.scene, "released": sorted(released),
                             "mechanism": WITHOUT_DP, "reason": reason, "time": time.time()})

    def _append(self, fields: dict[str, Any]) -> dict[str, Any]:
        entry = append_entry(self.state.ledger_path, fields)
        self.entries.append(entry)
        return entry

    @staticmethod
    def read_summary(directory: Path) -> dict[str, Any]:
        """The summary of a state directory's ledger without repairing or refusing it (a
        report reads; only training may move a torn tail aside)."""
        ledger = read_ledger(directory / LEDGER_FILE)
        return summarize(ledger.entries) | {"ledger_intact": ledger.intact}


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds, steps, epsilon (PRV and RDP), budget, delta, the last mechanism, unit, noise
    source and declared releases of a verified ledger's entries."""
    training = [e for e in entries if e.get("kind", TRAINING) == TRAINING]
    releases = [e for e in entries if e.get("kind") == RELEASE]
    if not training:
        return {"rounds_trained": 0, "epsilon": 0.0}
    last = training[-1]
    return {"rounds_trained": len(training), "steps": sum(e["steps"] for e in training),
            "epsilon": last["epsilon"], "epsilon_rdp": last["epsilon_rdp"],
            "budget_epsilon": last["budget_epsilon"], "delta": last["delta"],
            "noise_multiplier": last["noise_multiplier"],
            "sample_rate": last["sample_rate"], "unit": last.get("unit"),
            "noise_source": last.get("noise_source"),
            "guarantee": last.get("guarantee", {}),
            "releases_without_dp": sorted({r for e in releases for r in e["released"]})}
