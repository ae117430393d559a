"""The verdict is written from the numbers: each line says what the results hold."""

from dataclasses import replace

from fedscene.common.config import ExperimentConfig
from fedscene.simulations.results import (
    ArmResult,
    AuditSummary,
    BaselineResult,
    Efficiency,
    RunResults,
    ShotResult,
    TargetResult,
    Timings,
)
from fedscene.simulations.verdict import verdict_lines


def _gain(mean: float, low: float, high: float, verdict: str) -> dict:
    return {"full-hr@10": {"mean": mean, "low": low, "high": high, "verdict": verdict}}


def _summary(mean: float) -> dict:
    return {"full-hr@10": {"mean_over_scenes": mean}}


def _arm(mean: float, privacy: dict, **fields) -> ArmResult:
    return ArmResult(algorithm="fedper", privacy_setting="epsilon 8", per_scene={},
                     summary=_summary(mean), privacy=privacy, failures=[], absences=[],
                     budget_exhausted=[], too_few_units=[], not_evaluated=[],
                     evaluated_before_final_round={},
                     wall_s=1.0, **fields)


def _baseline(mean: float) -> BaselineResult:
    return BaselineResult(per_scene={}, summary=_summary(mean), note="")


PASSED = AuditSummary(passed=True, ledgers=4, verdicts={"near budget": 4}, findings=[],
                      report="audit.md")


def _results(**changes) -> RunResults:
    results = RunResults(
        run_id="r", config=ExperimentConfig(), scenes=[],
        shopper_scenes={1: 10, 2: 5, 3: 2},
        arms={"local": _arm(0.30, {"a": [{"epsilon": 8.0}]}),
              "fedper": _arm(0.34, {"a": [{"epsilon": 7.99}], "b": [{"epsilon": 8.0}]},
                             gain_baseline="local",
                             gain_over_local={"a": _gain(0.05, 0.01, 0.09, "gain"),
                                              "b": _gain(-0.04, -0.07, -0.01, "loss"),
                                              "c": _gain(0.0, -0.02, 0.02,
                                                         "no clear difference")},
                             gain_over_baselines={"content": {
                                 "a": _gain(0.1, 0.05, 0.15, "gain")}})},
        baselines={"content": _baseline(0.25), "popularity-scene": _baseline(0.20)},
        domain_separability={}, transfer=None, negative_transfer=[], audit=PASSED,
        timings=Timings(1.0, {}))
    return replace(results, **changes)


def test_lines_answer_the_three_questions_from_the_numbers():
    text = "\n".join(verdict_lines(_results()))
    assert "helped in 1 of 3 scenes (a +0.050 [+0.010, +0.090])" in text
    assert "hurt in 1 (b -0.040 [-0.070, -0.010])" in text
    assert "no clear difference in 1 (c)" in text
    assert "the strongest baseline, `content`, 0.250 (+0.090" in text
    assert "every scene spent epsilon 8.0" in text
    assert "7 shoppers buy in more than one scene (up to 3)" in text and "epsilon 24" in text
    assert "all 4 ledgers the run wrote PASS (4 near budget)" in text
    assert "new scene" not in text  # no transfer section, no transfer line


def test_failed_audit_and_no_privacy_are_said_plainly():
    failed = AuditSummary(passed=False, ledgers=2, verdicts={"over budget": 1, "ok": 1},
                          findings=["arms/x/ledger.jsonl: epsilon 9 exceeds the budget 8"],
                          report="audit.md")
    off = ExperimentConfig.model_validate({"privacy": {"enabled": False}})
    text = "\n".join(verdict_lines(_results(audit=failed, config=off)))
    assert "**Audit: FAILED**" in text and "(1 ok, 1 over budget)" in text
    assert "exceeds the budget" in text
    assert "Privacy:** off" in text
    sweep = replace(failed, verdicts={"near budget": 3, "no DP": 2})
    text = "\n".join(verdict_lines(_results(audit=sweep)))
    assert "all 3 ledgers of the private arms PASS; the 2 of the arms run without DP" in text


def test_transfer_line_says_when_no_labels_can_be_saved():
    def shot(local: float, arm: str | None = None, value: float = 0.0) -> ShotResult:
        metrics = {"local": {"full-hr@10": {"mean": local}}}
        gains = {}
        if arm:
            metrics[arm] = {"full-hr@10": {"mean": value}}
            gains[arm] = _gain(value - local, -0.1, 0.1, "no clear difference")
        return ShotResult(metrics=metrics, gain=gains, privacy={}, adapted={})

    transfer = {"new": TargetResult(interactions=500, shots={
        "0": shot(0.40, "zeroshot", 0.42), "10": shot(0.40, "finetune", 0.45),
        "all": shot(0.45, "finetune", 0.46)}, label_efficiency={
        "local": Efficiency("0", _gain(-0.05, -0.1, 0.01, "")["full-hr@10"]),
        "finetune": Efficiency("10", _gain(0.0, -0.05, 0.05, "")["full-hr@10"]),
        "zeroshot": Efficiency()})}
    text = "\n".join(verdict_lines(_results(transfer=transfer)))
    assert "How did the new scene `new` start?" in text
    assert "0.420 against 0.400 for a fresh model" in text
    assert "`finetune` is not clearly below it from k = 10" in text
    assert "no labels to save" in text


def test_a_sweep_is_judged_by_its_private_arms():
    results = _results()
    results.arms["fedper@noDP"] = replace(results.arms["fedper"], summary=_summary(0.50),
                                          privacy_setting="no DP")
    text = "\n".join(verdict_lines(results))
    assert "`fedper` against `local`" in text and "the best learned arm, `fedper`," in text
