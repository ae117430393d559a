"""The verdict that opens a run's report: a few lines written from the run's numbers.

It answers the three questions a user brings to a run: did federation help (per scene,
with paired intervals), how did a new scene start and how many labels did transfer save,
and what did it cost in privacy and does the audit pass.
"""

from __future__ import annotations

import math
from typing import Any

from fedscene.common.config import ExperimentConfig
from fedscene.common.metrics import PRIMARY
from fedscene.simulations.results import (
    ArmResult,
    AuditSummary,
    BaselineResult,
    Efficiency,
    RunResults,
    TargetResult,
)


def _interval(g: dict[str, Any]) -> str:
    return f"{g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"


def _listed(gains: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{scene} {_interval(g)}" for scene, g in gains.items())


def _private_first(arms: dict[str, ArmResult]) -> dict[str, ArmResult]:
    """The arms trained under DP when there are any (a sweep also runs arms without)."""
    private = {n: v for n, v in arms.items() if v.privacy_setting != "no DP"}
    return private or arms


def best_federated_arm(arms: dict[str, ArmResult]) -> str | None:
    """The (private, when any is) arm with a gain over `local` and the highest PRIMARY mean
    over scenes."""
    candidates = {name: v.mean_over_scenes() for name, v in _private_first(arms).items()
                  if v.gain_over_local}
    return max(candidates, key=candidates.get) if candidates else None


def federation_line(arms: dict[str, ArmResult]) -> str | None:
    arm = best_federated_arm(arms)
    if arm is None:
        return None
    per_scene = {scene: g[PRIMARY] for scene, g in (arms[arm].gain_over_local or {}).items()}
    helped = {s: g for s, g in per_scene.items() if g["verdict"] == "gain"}
    hurt = {s: g for s, g in per_scene.items() if g["verdict"] == "loss"}
    unclear = [s for s in per_scene if s not in helped and s not in hurt]
    base = arms[arm].gain_baseline or ""
    line = (f"**Did federation help?** `{arm}` against `{base}` ({PRIMARY}, paired 95% "
            f"intervals over each scene's test shoppers): helped in {len(helped)} of "
            f"{len(per_scene)} scenes" + (f" ({_listed(helped)})" if helped else ""))
    line += f", hurt in {len(hurt)}" + (f" ({_listed(hurt)})" if hurt else "")
    line += (f", no clear difference in {len(unclear)}" + (f" ({', '.join(unclear)})"
                                                          if unclear else "") + ". ")
    line += (f"Mean over scenes {arms[arm].mean_over_scenes():.3f} "
             f"against {arms[base].mean_over_scenes():.3f}.")
    return line


def baseline_line(arms: dict[str, ArmResult], baselines: dict[str, BaselineResult]
                  ) -> str | None:
    """The best learned (private, when any is) arm against the strongest baseline on the
    same test rows."""
    if not arms or not baselines:
        return None
    private = _private_first(arms)
    arm = max(private, key=lambda a: private[a].mean_over_scenes())
    strongest = max(baselines, key=lambda b: baselines[b].mean_over_scenes())
    per_scene = arms[arm].gain_over_baselines.get(strongest, {})
    won = sum(g[PRIMARY]["verdict"] == "gain" for g in per_scene.values())
    lost = sum(g[PRIMARY]["verdict"] == "loss" for g in per_scene.values())
    ours = arms[arm].mean_over_scenes()
    theirs = baselines[strongest].mean_over_scenes()
    return (f"**Against the baselines:** the best learned arm, `{arm}`, scores {ours:.3f}; "
            f"the strongest baseline, `{strongest}`, {theirs:.3f} ({ours - theirs:+.3f}; a "
            f"clear gain in {won} and a clear loss in {lost} of {len(per_scene)} scenes).")


def _reached(entry: Efficiency) -> str:
    return f"k = {entry.k} ({_interval(entry.gain or {})} against it)"


def transfer_lines(transfer: dict[str, TargetResult] | None) -> list[str]:
    lines = []
    for target, info in (transfer or {}).items():
        shots = info.shots
        start = shots["0"].metrics if "0" in shots else {}
        line = f"**How did the new scene `{target}` start?** ({info.interactions} labelled "
        line += "training interactions in all.) "
        if "zeroshot" in start and "local" in start:
            gain = shots["0"].gain["zeroshot"][PRIMARY]
            line += (f"With no labels the federated model scores "
                     f"{start['zeroshot'][PRIMARY]['mean']:.3f} against "
                     f"{start['local'][PRIMARY]['mean']:.3f} for a fresh model "
                     f"({_interval(gain)}, {gain['verdict']}). ")
        efficiency = info.label_efficiency
        if "all" in shots and "local" in shots["all"].metrics and efficiency:
            local_all = shots["all"].metrics["local"][PRIMARY]["mean"]
            line += f"Local-only with all its data reaches {local_all:.3f}; "
            local_k = efficiency.get("local", Efficiency()).k
            reached = {a: e for a, e in efficiency.items() if a != "local" and e.k is not None}
            if reached:
                line += "; ".join(f"`{a}` is not clearly below it from {_reached(e)}"
                                  for a, e in reached.items())
                fewest = min(reached.values(), key=lambda e: _labels(e.k, info))
                if local_k is not None and _labels(local_k, info) == 0:
                    line += (", but so is local-only with no labels at all (a fresh model "
                             "ranks by content similarity): no labels to save")
                elif local_k is not None and _labels(fewest.k, info) > 0:
                    saved = _labels(local_k, info) / _labels(fewest.k, info)
                    line += (f", where local-only itself needs k = {local_k}: transfer needs "
                             f"{saved:.0f}x fewer labels" if saved > 1 else
                             f"; local-only itself needs k = {local_k}: no labels saved")
                elif _labels(fewest.k, info) == 0:
                    line += ": transfer needs no labels at all"
                line += "."
            else:
                line += "no transferred arm reaches it at any k tried."
        else:
            line += ("Label efficiency needs local-only with all the target's data "
                     "(\"all\" among transfer.shots, and the local arm).")
        lines.append(line)
    return lines


def _labels(k: str | None, info: TargetResult) -> int:
    return info.interactions if k == "all" else int(k or 0)


def privacy_line(arms: dict[str, ArmResult], config: ExperimentConfig,
                 shopper_scenes: dict[int, int] | None) -> str | None:
    privacy = config.privacy
    if not privacy.enabled:
        return "**Privacy:** off; nothing in this run is differentially private."
    per_scene: dict[str, float] = {}
    for v in arms.values():
        for scene, spent in v.privacy.items():
            finite = [p["epsilon"] for p in spent
                      if isinstance(p.get("epsilon"), float) and math.isfinite(p["epsilon"])]
            if finite:
                per_scene[scene] = max(per_scene.get(scene, 0.0), *finite)
    rounded = {f"{e:.1f}" for e in per_scene.values()}
    spent_text = (f"every scene spent epsilon {rounded.pop()}" if len(rounded) == 1 else
                  "the scenes spent epsilon " + ", ".join(
                      f"{scene} {e:.1f}" for scene, e in per_scene.items()))
    line = (f"**What did it cost in privacy?** {privacy.unit}-level DP: {spent_text} "
            f"in its most-spent arm, of a budget of {privacy.epsilon:g} each (its "
            f"popularity prior released at {privacy.prior_share:.0%} of it, "
            + (f"its co-purchase factors at {privacy.copurchase_share:.0%} "
               if config.counts_copurchase() else "")
            + "and DP-SGD, composed).")
    if shopper_scenes:
        many = {n: c for n, c in shopper_scenes.items() if int(n) > 1}
        if many:
            most = max(int(n) for n in many)
            line += (f" {sum(many.values())} shoppers buy in more than one scene (up to "
                     f"{most}): each scene protects them with its own budget, so against one "
                     f"party that sees every scene's updates their guarantee is the sum, up to "
                     f"epsilon {most * privacy.epsilon:g}.")
    return line


def audit_line(audit: AuditSummary | None) -> str:
    if audit is None:
        return "**Audit:** no privacy ledger was written, nothing to audit."
    verdicts = ", ".join(f"{count} {name}" for name, count in sorted(audit.verdicts.items()))
    if set(audit.verdicts) == {"no DP"}:
        return (f"**Audit:** privacy is off: all {audit.ledgers} ledgers record training "
                f"without DP (verdict `no DP`), so nothing in this run is private.")
    passing = {"ok", "near budget"}
    if "no DP" in audit.verdicts and set(audit.verdicts) <= passing | {"no DP"}:
        private = sum(c for v, c in audit.verdicts.items() if v in passing)
        return (f"**Audit:** all {private} ledgers of the private arms PASS; the "
                f"{audit.verdicts['no DP']} of the arms run without DP say so (verdict "
                f"`no DP`); see `{audit.report}`.")
    if audit.passed:
        return (f"**Audit:** all {audit.ledgers} ledgers the run wrote PASS ({verdicts}); "
                f"see `{audit.report}`.")
    findings = "; ".join(audit.findings[:3]) or "see the verdicts"
    return (f"**Audit: FAILED** for some of the {audit.ledgers} ledgers ({verdicts}): "
            f"{findings}; see `{audit.report}`.")


def verdict_lines(results: RunResults) -> list[str]:
    """The verdict as Markdown bullet lines, from a run's results."""
    lines = [federation_line(results.arms),
             baseline_line(results.arms, results.baselines),
             *transfer_lines(results.transfer),
             privacy_line(results.arms, results.config, results.shopper_scenes),
             audit_line(results.audit)]
    return [f"- {line}" for line in lines if line]
