"""Turn per-user metrics of every arm into the numbers a report states.

Scene metrics are means over users with bootstrap intervals; an arm's gain over `local` is
a paired bootstrap over the same users, so "helped" means its interval lies above zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedscene.common.metrics import METRICS, bootstrap_ci, summarize

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
