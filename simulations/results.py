"""Turn per-user metrics of every arm into the numbers a report states, and type them.

Scene metrics are means over users with bootstrap intervals; an arm's gain over `local` is
a paired bootstrap over the same users, so "helped" means its interval lies above zero.
`RunResults` holds a run's findings as they go from the harness and transfer to the report
and `results.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedscene.common.config import ExperimentConfig
from fedscene.common.jsonable import json_safe
from fedscene.common.metrics import METRICS, PRIMARY, bootstrap_ci, summarize

PerUser = dict[str, np.ndarray]  # metric -> values, plus "user" -> ids


def average_seeds(runs: list[PerUser]) -> PerUser:
    """Mean over seeds per user (every seed evaluates the same users)."""
    out = {"user": runs[0]["user"]}
    for metric in METRICS:
        out[metric] = np.mean([run[metric] for run in runs], axis=0)
    return out


def scene_table(per_scene: dict[str, PerUser], samples: int, seed: int
                ) -> dict[str, dict[str, dict[str, float]]]:
    return {scene: summarize({m: v[m] for m in METRICS}, samples, seed)
            for scene, v in per_scene.items()}


def gain(arm: PerUser, base: PerUser, samples: int, seed: int) -> dict[str, dict[str, Any]]:
    """Paired mean difference arm - base per metric, with interval and verdict."""
    out = {}
    for metric in METRICS:
        diff = arm[metric] - base[metric]
        low, high = bootstrap_ci(diff, samples, seed)
        better_if_lower = metric == "logloss"
        if better_if_lower:
            verdict = "gain" if high < 0 else "loss" if low > 0 else "no clear difference"
        else:
            verdict = "gain" if low > 0 else "loss" if high < 0 else "no clear difference"
        out[metric] = {"mean": float(diff.mean()), "low": low, "high": high,
                       "verdict": verdict}
    return out


def worst_and_spread(table: dict[str, dict[str, dict[str, float]]], metric: str
                     ) -> dict[str, Any]:
    means = {scene: values[metric]["mean"] for scene, values in table.items()}
    worst = min(means, key=means.get)
    return {"metric": metric, "worst_scene": worst, "worst": means[worst],
            "best": max(means.values()), "spread": max(means.values()) - means[worst],
            "mean_over_scenes": float(np.mean(list(means.values())))}


# A run's results, typed from the harness through transfer to the report and results.json.
# Metric tables stay mappings: metric -> {"mean", "low", "high"} (a `Gain` adds "verdict").
MetricTable = dict[str, dict[str, float]]
SceneTable = dict[str, MetricTable]  # scene -> metric table
Gain = dict[str, dict[str, Any]]  # metric -> mean, low, high, verdict


@dataclass
class _Scored:
    """Metrics per scene on the run's test rows, and their summary over scenes."""

    per_scene: SceneTable
    summary: dict[str, dict[str, Any]]  # metric -> worst scene, spread, mean over scenes

    def mean_over_scenes(self, metric: str = PRIMARY) -> float:
        return float(self.summary[metric]["mean_over_scenes"])


@dataclass(kw_only=True)
class ArmResult(_Scored):
    """One arm (algorithm under one privacy setting) over its seeds."""

    algorithm: str
    privacy_setting: str  # "epsilon 8", "no DP"
    privacy: dict[str, list[dict[str, Any]]]  # scene -> each seed's ledger summary
    failures: list[dict[str, Any]]
    absences: list[dict[str, Any]]  # partners missing from a round, and rounds held (quorum)
    budget_exhausted: list[str]
    too_few_units: list[str]  # under DP, fewer than privacy.min_units: kept their start
    not_evaluated: list[str]
    evaluated_before_final_round: dict[str, int]
    wall_s: float
    gain_baseline: str | None = None  # the reference arm gains are measured against
    gain_over_local: dict[str, Gain] | None = None  # scene -> paired gain
    gain_over_baselines: dict[str, dict[str, Gain]] = field(default_factory=dict)


@dataclass
class BaselineResult(_Scored):
    """A baseline on the same test rows: what it reads, its metrics, and (DP popularity)
    the mechanism per scene."""

    note: str = ""
    mechanism: dict[str, dict[str, float]] | None = None


@dataclass
class ShotResult:
    """A transfer target adapted with k labelled interactions: per transfer arm."""

    metrics: dict[str, MetricTable]  # arm -> metric table
    privacy: dict[str, list[dict[str, Any]]]
    gain: dict[str, Gain]  # arm -> paired gain over local-only at the same k
    adapted: dict[str, bool]  # whether the arm trained on the k labels


@dataclass
class Efficiency:
    """The smallest k at which an arm is not clearly below local-only with all the
    target's data (None: not reached), and that paired difference."""

    k: str | None = None
    gain: dict[str, Any] | None = None


@dataclass
class TargetResult:
    """One held-out transfer target."""

    interactions: int
    shots: dict[str, ShotResult]  # k ("0", "10", ..., "all") -> result
    label_efficiency: dict[str, Efficiency]


@dataclass
class AuditSummary:
    """The run's audit of every ledger it wrote."""

    passed: bool
    ledgers: int
    verdicts: dict[str, int]
    findings: list[str]
    report: str


@dataclass
class Timings:
    total_s: float
    per_arm_s: dict[str, float]


@dataclass
class RunResults:
    """Everything a run found: what `run_experiment` returns, the report renders and
    `results.json` holds."""

    run_id: str
    config: ExperimentConfig
    scenes: list[dict[str, Any]]  # per federated scene: users, items, rows, dates
    shopper_scenes: dict[int, int]  # scene count -> shoppers buying in that many
    arms: dict[str, ArmResult]
    baselines: dict[str, BaselineResult]
    domain_separability: dict[str, dict[str, Any]]
    transfer: dict[str, TargetResult] | None
    negative_transfer: list[dict[str, Any]]
    audit: AuditSummary | None
    timings: Timings
    primary_metric: str = PRIMARY

    def to_json(self) -> dict[str, Any]:
        """The JSON document of results.json (non-finite numbers as strings)."""
        out = asdict(self)
        out["config"] = json.loads(self.config.to_json())
        return json_safe(out)
