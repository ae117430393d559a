"""Which arms a run plans: aligned twins, transfer sources, and their baselines."""

from fedscene.common.config import ExperimentConfig
from fedscene.simulations.runner import plan_arms


def _config(**sections) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "data": {"scenes": ["a", "b"]}, "simulation": {"arms": ["local", "fedper"]}} | sections)


def test_alignment_adds_an_aligned_twin_of_each_federated_arm():
    plans = {p.label: p for p in plan_arms(_config(
        alignment={"enabled": True}, simulation={"arms": ["local", "fedper"],
                                                 "privacy_sweep": [8.0, "none"]}))}
    assert sorted(plans) == ["fedper-dann@eps8", "fedper-dann@noDP", "fedper@eps8",
                             "fedper@noDP", "local@eps8", "local@noDP"]
    assert plans["fedper-dann@noDP"].config.alignment.enabled
    assert not plans["fedper-dann@noDP"].config.privacy.enabled
    assert plans["fedper-dann@noDP"].baseline == "local@noDP"
    assert not plans["fedper@eps8"].config.alignment.enabled  # the comparison, same run


def test_dann_transfer_arm_federates_targets_unlabelled_under_part_of_their_budget():
    config = _config(privacy={"epsilon": 6.0, "scenes": {"t": {"epsilon": 2.0}}},
                     transfer={"targets": ["t", "u"], "arms": ["local", "dann"],
                               "unlabelled_budget_share": 0.25})
    plans = {p.label: p for p in plan_arms(config)}
    assert sorted(plans) == ["fedper", "fedper-dann", "local"]
    aligned = plans["fedper-dann"].config
    assert aligned.data.scenes == ["a", "b", "t", "u"]
    assert aligned.alignment.enabled and aligned.alignment.unlabelled == ["t", "u"]
    # Their lifetime budgets stay; this campaign may reach only the share of them.
    assert aligned.privacy.budget_for("t").epsilon == 2.0
    assert aligned.privacy.budget_for("t").campaign_epsilon == 0.5
    assert aligned.privacy.budget_for("u").campaign_epsilon == 1.5
    assert aligned.privacy.budget_for("a").epsilon == 6.0
    assert aligned.privacy.budget_for("a").campaign_epsilon == 0.0
    assert not plans["fedper"].config.alignment.enabled


def test_targets_can_stay_out_of_the_aligned_federation():
    config = _config(transfer={"targets": ["t"], "arms": ["local", "dann"],
                               "unlabelled_targets": False})
    aligned = {p.label: p for p in plan_arms(config)}["fedper-dann"].config
    assert aligned.data.scenes == ["a", "b"] and aligned.alignment.unlabelled == []
    assert aligned.privacy.budget_for("t").epsilon == config.privacy.epsilon
