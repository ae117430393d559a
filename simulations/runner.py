"""A multi-scene simulation: every arm (algorithm x seed) on the same scenes, then a report.

The run directory is laid out by `common.layout.RunLayout`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedscene.audit.coordinator_record import check_against
from fedscene.audit.ledger_report import write_report as write_audit_report
from fedscene.audit.ledgers import audit
from fedscene.client.privacy import PrivacyAccount
from fedscene.client.state import SceneState
from fedscene.common.algorithms import algorithm as algorithm_named
from fedscene.common.algorithms import reference_name
from fedscene.common.config import SOURCE_ARMS, ExperimentConfig
from fedscene.common.data import SceneDataset, build_scene, load_raw_dataset, resolve_scenes
from fedscene.common.errors import FedsceneError
from fedscene.common.layout import ArmLayout, RunLayout
from fedscene.common.ledger import LEDGER_FILE
from fedscene.common.metrics import METRICS, PRIMARY
from fedscene.server.strategy import ReplyObserver
from fedscene.simulations.baselines import run_baselines
from fedscene.simulations.centralized import run_centralized
from fedscene.simulations.domain_probe import domain_separability
from fedscene.simulations.engine import run_arm
from fedscene.simulations.report import write_outputs
from fedscene.simulations.results import (
    ArmResult,
    AuditSummary,
    PerUser,
    RunResults,
    Timings,
    average_seeds,
    gain,
    scene_table,
    worst_and_spread,
)
from fedscene.simulations.transfer import TransferStart, negative_transfer, run_transfer

Progress = Callable[[str], None]


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to mix runs: a non-empty output directory needs `overwrite`."""
    if out_dir.exists() and any(out_dir.iterdir()):
        previous = RunLayout(out_dir).run_json
        what = "files"
        if previous.exists():
            info = json.loads(previous.read_text())
            what = f"run {info.get('run_id')} ({info.get('status')})"
        if not overwrite:
            raise FedsceneError(f"{out_dir}: already holds {what}; choose another --out or "
                                f"pass --overwrite to replace it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_run(out_dir: Path, run_id: str, status: str, config: ExperimentConfig) -> None:
    RunLayout(out_dir).run_json.write_text(json.dumps(
        {"run_id": run_id, "status": status, "time": time.time(),
         "config": json.loads(config.to_json())}, indent=2))


def _latest_per_user(arm: ArmLayout, scene: str) -> tuple[int, PerUser] | None:
    """The scene's latest evaluation (the final round's unless the scene failed there)."""
    files = SceneState(arm.scene(scene), scene).evaluation_files()
    if not files:
        return None
    saved = json.loads(files[-1].read_text())
    return saved["round"], {"user": np.array(saved["users"])} | {
        m: np.array(saved["per_user"][m]) for m in METRICS}


def privacy_spent(state_dir: Path) -> dict[str, Any]:
    """From a scene's ledger: cumulative epsilon, budget, rounds trained."""
    return PrivacyAccount.read_summary(state_dir)


def _round_rows(arm: ArmLayout, scenes: list[str]) -> list[dict[str, Any]]:
    """Per round and scene, the evaluation each scene saved in its own state directory
    (the simulation reads them there; in deployment they never leave the partner)."""
    rows = []
    for scene in scenes:
        for file in SceneState(arm.scene(scene), scene).evaluation_files():
            saved = json.loads(file.read_text())
            summary = saved["summary"]
            row = {"round": saved["round"], "scene": scene}
            row |= {m: summary[m]["mean"] for m in METRICS}
            row |= {f"{m}-low": summary[m]["low"] for m in METRICS}
            row |= {f"{m}-high": summary[m]["high"] for m in METRICS}
            rows.append(row | {"num-users": len(saved["users"])})
    return sorted(rows, key=lambda r: (r["round"], r["scene"]))


@dataclass(frozen=True)
class RunData:
    """The run's scenes: the config with its federated scenes fixed (so nodes map to
    scenes), their datasets, the held-out transfer targets', and how many of these scenes
    each shopper buys in (`shopper_scenes`: scene count -> shoppers)."""

    config: ExperimentConfig
    federated: list[SceneDataset]
    targets: list[SceneDataset]
    shopper_scenes: dict[int, int]


def build_datasets(config: ExperimentConfig) -> RunData:
    """Resolve scenes and build them; transfer targets are built too but kept out of
    federation."""
    raw = load_raw_dataset(config.data)
    targets = config.transfer.targets
    everything = resolve_scenes(raw, config.data.model_copy(
        update={"scenes": [*config.data.scenes, *[t for t in targets
                                                  if t not in config.data.scenes]]}
        if config.data.scenes else {}))
    missing = [t for t in targets if t not in everything]
    if missing:
        raise FedsceneError(f"transfer.targets: {missing} not among the usable scenes "
                            f"({', '.join(everything)}); check the names or data.min_users")
    unknown = [s for s in config.privacy.scenes if s not in everything]
    if unknown:  # data.scenes was empty, so the config alone could not tell
        raise FedsceneError(f"privacy.scenes names {unknown}, not among the usable scenes "
                            f"({', '.join(everything)}); fix the names")
    federated = [s for s in everything if s not in targets]
    if not federated:
        raise FedsceneError("transfer.targets holds every scene; leave some to federate")
    config = config.model_copy(update={"data": config.data.model_copy(
        update={"scenes": federated})})
    build = [build_scene(raw, s, config.data, config.model) for s in federated + targets]
    chosen = raw.interactions[raw.interactions["scene"].isin(federated + targets)]
    counts = chosen.groupby("user")["scene"].nunique().value_counts().sort_index()
    return RunData(config, build[:len(federated)], build[len(federated):],
                   {int(n): int(users) for n, users in counts.items()})


@dataclass(frozen=True)
class ArmPlan:
    """One arm of the run: an algorithm under one privacy setting and variant."""

    label: str
    algorithm: str
    privacy: str  # "epsilon 8", "no DP"
    config: ExperimentConfig
    baseline: str = ""  # the local arm its gains are measured against


def _privacy_settings(config: ExperimentConfig) -> list[tuple[str, str, ExperimentConfig]]:
    """(label suffix, description, config) per privacy setting of the run."""
    sweep = config.simulation.privacy_sweep
    if not sweep:
        label = f"epsilon {config.privacy.epsilon:g}" if config.privacy.enabled else "no DP"
        return [("", label, config)]
    settings = []
    for value in sweep:
        privacy = (config.privacy.model_copy(update={"enabled": False}) if value == "none"
                   else config.privacy.model_copy(update={"enabled": True, "epsilon": value}))
        suffix = "@noDP" if value == "none" else f"@eps{value:g}"
        label = "no DP" if value == "none" else f"epsilon {value:g}"
        settings.append((suffix, label, config.model_copy(update={"privacy": privacy})))
    return settings


def aligned_variant(config: ExperimentConfig) -> ExperimentConfig:
    """The run with domain-adversarial alignment on. Transfer targets (if any, and unless
    `transfer.unlabelled_targets` is false) join the federation with unlabelled data and
    spend `transfer.unlabelled_budget_share` of their budget doing so, keeping the rest for
    adaptation."""
    targets = ([t for t in config.transfer.targets if t not in config.data.scenes]
               if config.transfer.unlabelled_targets else [])
    unlabelled = [*config.alignment.unlabelled,
                  *[t for t in targets if t not in config.alignment.unlabelled]]
    privacy = config.privacy
    if targets:
        share = config.transfer.unlabelled_budget_share
        budgets = dict(privacy.scenes)
        for target in targets:  # the same lifetime budget; this campaign reaches a share
            budget = privacy.budget_for(target)
            budgets[target] = budget.model_copy(
                update={"campaign_epsilon": budget.epsilon * share})
        privacy = privacy.model_copy(update={"scenes": budgets})
    return config.model_copy(update={
        "alignment": config.alignment.model_copy(update={"enabled": True,
                                                         "unlabelled": unlabelled}),
        "data": config.data.model_copy(update={"scenes": [*config.data.scenes, *targets]}),
        "privacy": privacy})


def _meta_label(source: str) -> str:
    """The meta transfer arm's federation: `source` with Reptile's outer step."""
    return f"{source}-reptile"


def _dann_label(algorithm: str, suffix: str = "") -> str:
    """`algorithm` trained with domain-adversarial alignment (`suffix`: its privacy)."""
    return f"{algorithm}-dann{suffix}"


def plan_arms(config: ExperimentConfig) -> list[ArmPlan]:
    """Arms x privacy settings, each federated arm also aligned when `alignment.enabled`;
    `centralized` (never private) runs once; transfer adds the arms its encoders come from."""
    plain = config.model_copy(update={"alignment": config.alignment.model_copy(
        update={"enabled": False})})
    settings = _privacy_settings(plain)
    plans = []
    transfer = config.transfer
    reference = reference_name()
    if transfer.targets and "meta" in transfer.arms:
        # The meta arm's encoder: the source algorithm with few inner steps and a Reptile
        # outer step, so that a few local steps adapt it.
        meta = plain.model_copy(update={
            "federation": config.federation.model_copy(
                update={"server_learning_rate": transfer.meta_server_learning_rate}),
            "training": config.training.model_copy(
                update={"local_epochs": transfer.meta_local_epochs})})
        plans.append(ArmPlan(_meta_label(transfer.source), transfer.source,
                             settings[0][1], meta, baseline=reference))
    for name in config.simulation.arms:
        if not algorithm_named(name).federated:
            plans.append(ArmPlan(name, name, "no DP", plain))
            continue
        for suffix, label, variant in settings:
            plans.append(ArmPlan(name + suffix, name, label, variant,
                                 baseline=reference + suffix))
            if config.alignment.enabled and algorithm_named(name).alignable:
                plans.append(ArmPlan(_dann_label(name, suffix), name, label,
                                     aligned_variant(variant), baseline=reference + suffix))
    dann = _dann_label(transfer.source)
    if transfer.targets and "dann" in transfer.arms and dann not in {p.label for p in plans}:
        plans.append(ArmPlan(dann, transfer.source, settings[0][1],
                             aligned_variant(settings[0][2]), baseline=reference))
    return plans


def _run_plan(plan: ArmPlan, datasets: list[SceneDataset], out_dir: Path, run_id: str,
              progress: Progress, observer: ReplyObserver | None, verbose: bool
              ) -> tuple[ArmResult, dict[str, PerUser], list[dict[str, Any]]]:
    """Every seed of one arm; returns its results, per-user metrics and round rows."""
    config = plan.config
    rounds = config.federation.rounds
    runs: dict[str, list[PerUser]] = {d.scene: [] for d in datasets}
    privacy: dict[str, list[dict[str, Any]]] = {}
    failures: list[dict[str, Any]] = []
    absences: list[dict[str, Any]] = []
    exhausted: set[str] = set()
    too_few: set[str] = set()
    missing: set[str] = set()  # scenes with no evaluation at all (failed throughout)
    stale: dict[str, int] = {}  # scenes whose last evaluation is before the final round
    round_rows: list[dict[str, Any]] = []
    t0 = time.time()
    for seed in config.simulation.seeds:
        arm = RunLayout(out_dir).arm(plan.label, seed)
        progress(f"{plan.label} (seed {seed}): {rounds} rounds ...")
        if not algorithm_named(plan.algorithm).federated:
            final, rows = run_centralized(config, datasets, seed)
            for scene, values in final.items():
                runs[scene].append(values)
        else:
            outcome = run_arm(config, algorithm=plan.algorithm, out_dir=arm.root, seed=seed,
                              run_id=f"{run_id}-{plan.label}-{seed}", observer=observer,
                              verbose=verbose)
            rows = _round_rows(arm, [d.scene for d in datasets])
            failures += [f | {"seed": seed} for f in outcome.failures]
            absences += [a | {"seed": seed} for a in outcome.absences]
            absences += [{"seed": seed, "round": h["round"], "phase": h["phase"],
                          "absent": [], "reason": h["reason"]} for h in outcome.below_quorum]
            exhausted |= set(outcome.exhausted)
            too_few |= set(outcome.too_few_units)
            for d in datasets:
                latest = _latest_per_user(arm, d.scene)
                if latest is None:
                    missing.add(d.scene)
                    continue
                if latest[0] != rounds:
                    stale[d.scene] = latest[0]
                runs[d.scene].append(latest[1])
                privacy.setdefault(d.scene, []).append(
                    privacy_spent(arm.scene(d.scene)))
        round_rows += [{"arm": plan.label, "seed": seed} | r for r in rows]
    per_user = {scene: average_seeds(values) for scene, values in runs.items()
                if values and scene not in missing}
    table = scene_table(per_user, config.simulation.bootstrap_samples, 0)
    result = ArmResult(algorithm=plan.algorithm, privacy_setting=plan.privacy,
                       per_scene=table,
                       summary={m: worst_and_spread(table, m) for m in METRICS},
                       privacy=privacy, failures=failures, absences=absences,
                       budget_exhausted=sorted(exhausted), too_few_units=sorted(too_few),
                       not_evaluated=sorted(missing), evaluated_before_final_round=stale,
                       wall_s=time.time() - t0)
    hr = result.summary[PRIMARY]
    progress(f"{plan.label}: {PRIMARY} mean over scenes {hr['mean_over_scenes']:.3f}, worst "
             f"{hr['worst_scene']} {hr['worst']:.3f} ({result.wall_s:.0f}s)")
    return result, per_user, round_rows


def run_experiment(config: ExperimentConfig, out_dir: Path, *, overwrite: bool = False,
                   progress: Progress = print, observer: ReplyObserver | None = None,
                   verbose: bool = False) -> RunResults:
    """Run every arm and write the run directory; returns the run's results."""
    prepare_out_dir(out_dir, overwrite)
    run_id = uuid.uuid4().hex[:12]
    _write_run(out_dir, run_id, "running", config)
    started = time.time()
    data = build_datasets(config)
    config, datasets, targets = data.config, data.federated, data.targets
    _write_run(out_dir, run_id, "running", config)
    plans = plan_arms(config)
    progress(f"run {run_id}: {len(datasets)} scenes ({', '.join(config.data.scenes)}), "
             f"arms {', '.join(p.label for p in plans)}, seeds {config.simulation.seeds}")
    samples = config.simulation.bootstrap_samples
    per_user: dict[str, dict[str, PerUser]] = {}
    round_rows: list[dict[str, Any]] = []
    arms: dict[str, ArmResult] = {}
    for plan in plans:
        arms[plan.label], per_user[plan.label], rows = _run_plan(
            plan, datasets, out_dir, run_id, progress, observer, verbose)
        round_rows += rows
    for plan in plans:
        base = plan.baseline  # local under the same privacy
        if algorithm_named(plan.algorithm).reference or base not in per_user:
            continue
        arms[plan.label].gain_over_local = {
            d.scene: gain(per_user[plan.label][d.scene], per_user[base][d.scene], samples, 0)
            for d in datasets if d.scene in per_user[plan.label] and d.scene in per_user[base]}
        arms[plan.label].gain_baseline = base
    baselines, baseline_users = run_baselines(config, datasets)
    for plan in plans:
        arms[plan.label].gain_over_baselines = {
            name: {d.scene: gain(per_user[plan.label][d.scene], scenes[d.scene], samples, 0)
                   for d in datasets if d.scene in per_user[plan.label]}
            for name, scenes in baseline_users.items()}
    separability = _separability(config, plans, datasets + targets, out_dir)
    transfer = None
    if targets:
        transfer = run_transfer(config, targets, out_dir, _transfer_inits(config, out_dir),
                                progress)
    progress("auditing every privacy ledger the run wrote ...")
    ledgers = audit_run(out_dir)
    results = RunResults(
        run_id=run_id, config=config, scenes=[_scene_summary(d) for d in datasets],
        shopper_scenes=data.shopper_scenes, arms=arms, baselines=baselines,
        domain_separability=separability, transfer=transfer,
        negative_transfer=negative_transfer(transfer) if transfer else [], audit=ledgers,
        timings=Timings(time.time() - started, {a: v.wall_s for a, v in arms.items()}))
    write_outputs(out_dir, results, round_rows)
    _write_run(out_dir, run_id, "complete", config)
    return results


def audit_run(out_dir: Path) -> AuditSummary | None:
    """Audit every ledger under the run directory (`fedscene audit`'s checks, and each
    federation's scenes against the ledger heads it recorded, as `--coordinator` does),
    write `audit.md` beside the report, and return the verdicts for results.json (None
    when the run wrote no ledger: no arm trained on a scene's data)."""
    paths = sorted(out_dir.rglob(LEDGER_FILE))
    if not paths:
        return None
    audited = audit(paths, jobs=min(len(paths), os.cpu_count() or 1))
    for arm in RunLayout(out_dir).arms():  # each federation's record of its scenes' ledgers
        if arm.federation_json.exists():
            check_against(audited, arm.federation_json, under=arm.scenes)
    report = RunLayout(out_dir).audit_md
    write_audit_report(audited, report)
    return AuditSummary(passed=all(a.passed for a in audited), ledgers=len(audited),
                        verdicts=dict(Counter(a.verdict for a in audited)),
                        findings=[f"{Path(a.ledger).relative_to(out_dir)}: {reason}"
                                  for a in audited for reason in a.reasons],
                        report=report.name)


def _transfer_inits(config: ExperimentConfig, out_dir: Path
                    ) -> dict[str, dict[int, TransferStart]]:
    """Per transfer arm and seed: the final global shared parameters it starts from, and
    for `dann` the federation's state of the targets (they took part, unlabelled)."""
    source = config.transfer.source  # an arm without a suffix: the config refuses a sweep
    rounds = config.federation.rounds
    arm_source = dict.fromkeys(SOURCE_ARMS, source) | {"meta": _meta_label(source),
                                                       "dann": _dann_label(source)}
    inits: dict[str, dict[int, TransferStart]] = {}
    for arm in config.transfer.arms:
        if arm not in arm_source:  # local starts fresh
            continue
        label = arm_source[arm]
        inits[arm] = {}
        for seed in config.simulation.seeds:
            layout = RunLayout(out_dir).arm(label, seed)
            shared = torch.load(layout.checkpoint(rounds))
            inits[arm][seed] = TransferStart(shared, layout.scenes if arm == "dann" else None)
    return inits


def _separability(config: ExperimentConfig, plans: list[ArmPlan],
                  datasets: list[SceneDataset], out_dir: Path) -> dict[str, Any]:
    """Per arm with a shared encoder: how well a linear probe tells the scenes (targets
    included) apart from its final encoder, first seed; see `domain_probe`."""
    seed = config.simulation.seeds[0]
    out: dict[str, Any] = {}
    for plan in plans:
        if not algorithm_named(plan.algorithm).shares or len(datasets) < 2:
            continue
        path = RunLayout(out_dir).arm(plan.label, seed).checkpoint(
            plan.config.federation.rounds)
        if path.exists():
            out[plan.label] = domain_separability(config, datasets, torch.load(path), seed)
    return out


def _scene_summary(d: SceneDataset) -> dict[str, Any]:
    times = np.concatenate([d.train_time, d.test_time])
    return {"scene": d.scene, "users": d.n_users, "items": d.n_items,
            "train_interactions": d.n_train, "test_interactions": len(d.test_item),
            "test_users": int(len(np.unique(d.test_user))),
            "first": str(times.min())[:10], "last": str(times.max())[:10]}
