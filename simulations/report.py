"""Write a run's results: results.json, rounds.csv, plots and report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fedscene.common.algorithms import algorithm as algorithm_named
from fedscene.common.algorithms import reference_name
from fedscene.common.config import PrivacyConfig
from fedscene.common.html_page import write_html
from fedscene.common.layout import RunLayout
from fedscene.common.metrics import PRIMARY
from fedscene.simulations.results import (
    ArmResult,
    AuditSummary,
    BaselineResult,
    RunResults,
    TargetResult,
)
from fedscene.simulations.verdict import audit_line, verdict_lines

TABLE_METRICS = (PRIMARY, "hr@10", "full-ndcg@10", "full-recall@20")


def _save(fig, out_dir: Path, stem: str, metric: str) -> str:
    """Write a figure as `<stem>_<metric>.png` beside the report; returns the file name."""
    path = RunLayout(out_dir).plot(f"{stem}_{metric.replace('@', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def write_outputs(out_dir: Path, results: RunResults, round_rows: list[dict[str, Any]]
                  ) -> None:
    layout = RunLayout(out_dir)
    layout.results_json.write_text(json.dumps(results.to_json(), indent=2))
    rounds = pd.DataFrame(round_rows)
    rounds.to_csv(layout.rounds_csv, index=False)
    plots = []
    if not rounds.empty:
        plots.append(_plot_rounds(out_dir, rounds, PRIMARY))
        plots.append(_plot_rounds(out_dir, rounds, "hr@10"))
    plots.append(_plot_scenes(out_dir, results, PRIMARY))
    if results.config.simulation.privacy_sweep:
        plots.append(_plot_privacy_utility(out_dir, results, PRIMARY))
    if results.transfer:
        plots.append(_plot_adaptation(out_dir, results.transfer, PRIMARY))
    layout.report_md.write_text(render_report(results, plots))
    write_html(layout.report_md, layout.report_html, f"fedscene run {results.run_id}")


def _plot_rounds(out_dir: Path, rounds: pd.DataFrame, metric: str) -> str:
    mean = rounds.groupby(["arm", "round"])[metric].mean().reset_index()
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for arm, part in mean.groupby("arm"):
        ax.plot(part["round"], part[metric], marker="o", label=arm)
    ax.set_xlabel("round")
    ax.set_ylabel(f"{metric.upper()} (mean over scenes)")
    ax.set_title(f"{metric.upper()} per round")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out_dir, "rounds", metric)


def _plot_scenes(out_dir: Path, results: RunResults, metric: str) -> str:
    columns = {arm: v.per_scene for arm, v in results.arms.items()}
    columns |= {name: v.per_scene for name, v in results.baselines.items()}
    scenes = [s["scene"] for s in results.scenes]
    width = 0.8 / max(len(columns), 1)
    fig = Figure(figsize=(max(6.4, 1.1 * len(scenes) + 2), 4.2))
    ax = fig.subplots()
    for i, (name, table) in enumerate(columns.items()):
        shown = [j for j, s in enumerate(scenes) if s in table]
        means = [table[scenes[j]][metric]["mean"] for j in shown]
        errors = [[m - table[scenes[j]][metric]["low"] for j, m in zip(shown, means, strict=True)],
                  [table[scenes[j]][metric]["high"] - m for j, m in zip(shown, means,
                                                                         strict=True)]]
        xs = [j + i * width for j in shown]
        ax.bar(xs, means, width, yerr=errors, capsize=2, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scenes))])
    ax.set_xticklabels(scenes, rotation=30, ha="right")
    ax.set_ylabel(f"{metric.upper()} (95% CI over users)")
    ax.set_title(f"{metric.upper()} per scene")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out_dir, "scenes", metric)


def privacy_utility(results: RunResults, metric: str) -> dict[str, dict[str, float]]:
    """algorithm -> privacy setting -> metric mean over scenes."""
    out: dict[str, dict[str, float]] = {}
    for arm in results.arms.values():
        out.setdefault(arm.algorithm, {})[arm.privacy_setting] = arm.mean_over_scenes(metric)
    return out


def _setting_order(setting: str) -> float:
    return math.inf if setting == "no DP" else float(setting.split()[-1])


def _plot_privacy_utility(out_dir: Path, results: RunResults, metric: str) -> str:
    table = privacy_utility(results, metric)
    settings = sorted({s for row in table.values() for s in row}, key=_setting_order)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for algorithm, row in table.items():
        if not algorithm_named(algorithm).federated:
            ax.axhline(row["no DP"], color="grey", ls="--", label=f"{algorithm} (no DP)")
            continue
        xs = [i for i, s in enumerate(settings) if s in row]
        ax.plot(xs, [row[settings[i]] for i in xs], marker="o", label=algorithm)
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels(settings)
    ax.set_xlabel("privacy budget per scene")
    ax.set_ylabel(f"{metric.upper()} (mean over scenes)")
    ax.set_title("privacy-utility trade-off")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "privacy_utility", metric)


def _plot_adaptation(out_dir: Path, transfer: dict[str, TargetResult], metric: str) -> str:
    """Metric against k, one line per arm, one panel per target scene."""
    fig = Figure(figsize=(5.2 * len(transfer), 3.8))
    axes = fig.subplots(1, len(transfer), squeeze=False)
    for ax, (target, info) in zip(axes[0], transfer.items(), strict=True):
        shots = list(info.shots)
        arms = sorted({a for e in info.shots.values() for a in e.metrics})
        for arm in arms:
            xs = [i for i, k in enumerate(shots) if arm in info.shots[k].metrics]
            values = [info.shots[shots[i]].metrics[arm][metric] for i in xs]
            ax.errorbar(xs, [v["mean"] for v in values],
                        yerr=[[v["mean"] - v["low"] for v in values],
                              [v["high"] - v["mean"] for v in values]],
                        marker="o", capsize=2, label=arm)
        ax.set_xticks(range(len(shots)))
        ax.set_xticklabels(shots)
        ax.set_xlabel("labelled target interactions k")
        ax.set_ylabel(metric.upper())
        ax.set_title(f"adaptation to {target}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out_dir, "adaptation", metric)


def _separability_lines(separability: dict[str, Any]) -> list[str]:
    first = next(iter(separability.values()))
    lines = ["", "## Can the scenes be told apart from the shared encoder?", "",
             f"Held-out accuracy of a linear classifier that predicts the scene "
             f"({', '.join(first['scenes'])}) from the final encoder's vectors; chance is "
             f"{first['chance']:.3f}. Closer to chance means better aligned (`-dann` arms "
             f"train for it).", "", "| arm | user vectors | item vectors |", "|---|---|---|"]
    lines += [f"| {arm} | {v['users']:.3f} | {v['items']:.3f} |"
              for arm, v in separability.items()]
    return lines


def _transfer_lines(transfer: dict[str, TargetResult], flagged: list[dict[str, Any]],
                    privacy: PrivacyConfig) -> list[str]:
    lines = ["", f"## Transfer to held-out scenes ({PRIMARY})", "",
             "Each cell: mean [95% interval]; gain over local-only with the same k, paired over "
             "the target's test users. Negative transfer: a gain interval below zero."]
    for target, info in transfer.items():
        arms = sorted({a for e in info.shots.values() for a in e.metrics},
                      key=lambda a: (a != "local", a))
        lines += ["", f"### {target} ({info.interactions} training interactions)", "",
                  "| k | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        for k, entry in info.shots.items():
            cells = []
            for arm in arms:
                if arm not in entry.metrics:
                    cells.append("-")
                    continue
                cell = _cell(entry.metrics, arm, PRIMARY)
                if arm in entry.gain:
                    g = entry.gain[arm][PRIMARY]
                    cell += (f"; gain {g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}] "
                             f"{g['verdict']}")
                cells.append(cell)
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        idle = [k for k, entry in info.shots.items()
                if k != "0" and not any(entry.adapted.values())]
        if privacy.enabled and idle:
            lines += ["", f"At k = {', '.join(idle)} the target has fewer than "
                          f"`privacy.min_units` ({privacy.min_units}) shoppers: nothing "
                          f"adapts under DP and each arm scores as it starts."]
        lines += _efficiency_lines(info)
    lines += ["", "Negative transfer: " + ("; ".join(
        f"{f['target']} k={f['k']} {f['arm']} ({f['mean']:+.3f})" for f in flagged)
        if flagged else "none flagged.")]
    return lines


def _efficiency_lines(info: TargetResult) -> list[str]:
    """Label efficiency: per arm, the smallest k not clearly below local-only with all."""
    efficiency = info.label_efficiency
    if not efficiency:
        return []
    lines = ["", f"Label efficiency: the smallest k at which an arm is not clearly below "
                 f"local-only trained on all {info.interactions} interactions (paired "
                 f"difference, 95% interval).", "", "| arm | smallest k | difference |",
             "|---|---|---|"]
    for arm, entry in efficiency.items():
        if entry.k is None or entry.gain is None:
            lines.append(f"| {arm} | not reached | - |")
            continue
        g = entry.gain
        lines.append(f"| {arm} | {entry.k} | {g['mean']:+.3f} [{g['low']:+.3f}, "
                     f"{g['high']:+.3f}] |")
    return lines


def _audit_lines(audit: AuditSummary | None) -> list[str]:
    if audit is None:
        return []
    lines = ["", "## Privacy audit", "",
             audit_line(audit) + " Each ledger's epsilon is recomputed from its mechanism "
             "records alone."]
    lines += [f"- {finding}" for finding in audit.findings]
    return lines


def _cell(table: dict[str, Any], scene: str, metric: str) -> str:
    if scene not in table:
        return "failed"
    value = table[scene][metric]
    return f"{value['mean']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


def _epsilon(privacy: list[dict[str, Any]]) -> str:
    spent = [p.get("epsilon", 0.0) for p in privacy]
    budget = privacy[0].get("budget_epsilon") if privacy else None
    if not spent:
        return "-"
    worst = max(spent)
    if not math.isfinite(worst):
        return "no DP"
    return f"{worst:.2f} of {budget:.2f}" if budget is not None else f"{worst:.2f}"


def _baseline_gain_lines(arms: dict[str, ArmResult]) -> list[str]:
    """Per arm and baseline: the mean paired gain over scenes and how many scenes show a
    gain or a loss (interval above or below zero)."""
    first = next((v.gain_over_baselines for v in arms.values() if v.gain_over_baselines),
                 None)
    if not first:
        return []
    names = list(first)
    lines = ["", f"## Gain over each baseline ({PRIMARY}, paired over users; mean over "
                 "scenes, and scenes with a gain / a loss)", "",
             "| arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for arm, v in arms.items():
        cells = []
        for name in names:
            per_scene = [g[PRIMARY] for g in v.gain_over_baselines[name].values()]
            if not per_scene:
                cells.append("-")
                continue
            mean = sum(g["mean"] for g in per_scene) / len(per_scene)
            won = sum(g["verdict"] == "gain" for g in per_scene)
            lost = sum(g["verdict"] == "loss" for g in per_scene)
            cells.append(f"{mean:+.3f} ({won} gain / {lost} loss)")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def render_report(results: RunResults, plots: list[str]) -> str:
    config = results.config
    scenes = [s["scene"] for s in results.scenes]
    lines = [
        f"# fedscene run {results.run_id}",
        "",
        "## Verdict",
        "",
        *verdict_lines(results),
        "",
        "## Setting",
        "",
        f"Data: `{config.data.source}` ({config.data.scene_by} scenes); "
        f"{len(scenes)} scenes; "
        f"{config.federation.rounds} rounds; privacy "
        + (f"on (epsilon {config.privacy.epsilon} per scene unless set, "
           f"clip {config.privacy.max_grad_norm})" if config.privacy.enabled
           else "off") + f"; seeds {config.simulation.seeds}.",
        "Intervals are 95% bootstrap intervals over each scene's test users. "
        "A difference inside them is no difference.",
        "",
        f"Test: each shopper's latest {config.data.test_baskets} basket(s) "
        f"({config.data.split} split; a basket never spans train and test). "
        f"**Primary metric: {PRIMARY}**, the held-out basket ranked against the whole "
        "catalogue less what the shopper bought before (`full-`: full-catalogue; plain "
        f"`hr@10`: each item against {config.data.eval_negatives} sampled negatives).",
        "",
        "Baselines on the same test rows: " + "; ".join(
            f"`{name}`: {v.note}" for name, v in results.baselines.items()) + ".",
        "",
        "## Scenes",
        "",
        "| scene | users | items | train | test | test users | from | to |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {s['scene']} | {s['users']} | {s['items']} | {s['train_interactions']} | "
              f"{s['test_interactions']} | {s['test_users']} | {s['first']} | {s['last']} |"
              for s in results.scenes]
    columns: dict[str, ArmResult | BaselineResult] = {**results.arms, **results.baselines}
    for metric in TABLE_METRICS:
        lines += ["", f"## {metric.upper()} per scene", "",
                  "| scene | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for scene in scenes:
            lines.append(f"| {scene} | " + " | ".join(
                _cell(v.per_scene, scene, metric) for v in columns.values()) + " |")
        lines.append("| **mean over scenes** | " + " | ".join(
            f"{v.summary[metric]['mean_over_scenes']:.3f}" if metric in v.summary
            else "-" for v in columns.values()) + " |")
        lines.append("| **worst scene** | " + " | ".join(
            f"{v.summary[metric]['worst_scene']} {v.summary[metric]['worst']:.3f}"
            if metric in v.summary else "-" for v in columns.values()) + " |")
        lines.append("| **spread (best - worst)** | " + " | ".join(
            f"{v.summary[metric]['spread']:.3f}" if metric in v.summary else "-"
            for v in columns.values()) + " |")
    lines += _baseline_gain_lines(results.arms)
    if config.simulation.privacy_sweep:
        table = privacy_utility(results, PRIMARY)
        settings = sorted({s for row in table.values() for s in row}, key=_setting_order)
        lines += ["", f"## Privacy-utility ({PRIMARY}, mean over scenes)", "",
                  "| algorithm | " + " | ".join(settings) + " |",
                  "|---|" + "---|" * len(settings)]
        lines += [f"| {algorithm} | " + " | ".join(
            f"{row[s]:.3f}" if s in row else "-" for s in settings) + " |"
                  for algorithm, row in table.items()]
    gains = {arm: v.gain_over_local for arm, v in results.arms.items()
             if v.gain_over_local is not None}
    if gains:
        lines += ["", f"## Gain over `{reference_name()}` under the same privacy setting "
                      f"({PRIMARY}, paired over users)", "",
                  "| scene | " + " | ".join(gains) + " |", "|---|" + "---|" * len(gains)]
        for scene in scenes:
            cells = []
            for per_scene in gains.values():
                if scene not in per_scene:
                    cells.append("-")
                    continue
                g = per_scene[scene][PRIMARY]
                cells.append(f"{g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}] "
                             f"{g['verdict']}")
            lines.append(f"| {scene} | " + " | ".join(cells) + " |")
    if results.domain_separability:
        lines += _separability_lines(results.domain_separability)
    if results.transfer:
        lines += _transfer_lines(results.transfer, results.negative_transfer, config.privacy)
    lines += ["", "## Privacy spent (cumulative epsilon of the most-spent scene)", "",
              "| arm | epsilon spent of budget | scenes out of budget | scenes too small to "
              "train under DP (kept their start) | failures |",
              "|---|---|---|---|---|"]
    for arm, v in results.arms.items():
        flat = [p for values in v.privacy.values() for p in values]
        lines.append(f"| {arm} | {_epsilon(flat) if flat else 'not federated, no DP'} | "
                     f"{', '.join(v.budget_exhausted) or '-'} | "
                     f"{', '.join(v.too_few_units) or '-'} | {len(v.failures)} |")
    lines += _audit_lines(results.audit)
    failures = [f | {"arm": arm} for arm, v in results.arms.items() for f in v.failures]
    if failures:
        lines += ["", "## Failures", "",
                  "A failed reply is left out of its round; the others complete it. Scenes "
                  "listed as 'failed' above never produced an evaluation."]
        for arm, v in results.arms.items():
            for scene, round_ in v.evaluated_before_final_round.items():
                lines.append(f"- {arm}: {scene} is reported at round {round_}, its last "
                             f"successful evaluation")
        lines += [f"- {f['arm']} seed {f['seed']} round {f['round']} ({f['phase']}): "
                  f"{f['scene']}: {f['reason']}" for f in failures]
    lines += absence_lines(results.arms)
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    timings = results.timings
    lines += ["", f"Total wall time {timings.total_s:.0f}s (" + ", ".join(
        f"{a} {s:.0f}s" for a, s in timings.per_arm_s.items()) + ")."]
    lines += ["", "Data: UCI Online Retail (Chen, Sain & Guo 2012), CC BY 4.0, where used."]
    return "\n".join(lines) + "\n"


def absence_lines(arms: dict[str, ArmResult]) -> list[str]:
    """The report's "Absent partners" section: each round a partner missed, and each round
    held below the quorum (nothing when every partner took part in every round)."""
    absences = [a | {"arm": arm} for arm, v in arms.items() for a in v.absences]
    if not absences:
        return []
    return ["", "## Absent partners", "",
            "A round waits `federation.partner_wait_s` for every partner, then goes on with "
            "those there if they make `federation.quorum`; below it the shared parameters "
            "stay as they are.", ""] + [
        f"- {a['arm']} seed {a['seed']} round {a['round']} ({a['phase']}): "
        f"{', '.join(a['absent']) + ': ' if a['absent'] else ''}{a['reason']}"
        for a in absences]
