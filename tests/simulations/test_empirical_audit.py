"""The empirical audit flags broken mechanisms and finds the real one consistent.

Each case audits one campaign (2 rounds) of the embedded `toys` mall's real training at a
claimed epsilon of 1 (or 8) with 1000 canary shoppers per adversary. The broken mechanisms
are the flaws the ledger cannot show: noise off, clipping off, noise the coordinator can
regenerate from the seeds it sent, and an example-level unit audited with shopper canaries.
"""

import json

import numpy as np
import pytest
from opacus.optimizers import optimizer as opacus_optimizer

import fedscene.client.task as task
from fedscene.common.config import load_config
from fedscene.common.training import DPSettings
from fedscene.simulations.cli import default_config_path, main
from fedscene.simulations.empirical_audit import (
    CONSISTENT,
    VIOLATED,
    epsilon_lower_bound,
    run_empirical_audit,
)

SCENE = "toys"


def _audit(*overrides: str, epsilon: float = 1.0):
    config = load_config(default_config_path(),
                         ["federation.rounds=2", f"privacy.epsilon={epsilon}", *overrides])
    return run_empirical_audit(config, SCENE, canaries=1000, seed=3)


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_real_mechanism_is_consistent(epsilon):
    result = _audit(epsilon=epsilon)
    assert result.claimed_epsilon == pytest.approx(epsilon, abs=0.02)
    assert result.white_box.epsilon_lower <= result.claimed_epsilon
    assert result.black_box.epsilon_lower <= result.claimed_epsilon
    assert result.verdict == CONSISTENT
    assert result.white_box.note == ""  # secret noise: replaying the seeds explains nothing


def test_noise_off_is_flagged(monkeypatch):
    # The ledger records the calibrated noise; the steps run without it.
    monkeypatch.setattr(task, "DPSettings",
                        lambda sigma, clip, mode: DPSettings(0.0, clip, mode))
    result = _audit()
    assert result.white_box.verdict == VIOLATED
    assert result.white_box.epsilon_lower > 2 * result.claimed_epsilon


def test_clipping_off_is_flagged(monkeypatch):
    def sum_unclipped(self):
        for param in self.params:
            summed = self._get_flat_grad_sample(param).sum(0)
            param.summed_grad = (summed if param.summed_grad is None
                                 else param.summed_grad + summed)
        for param in self.params:
            opacus_optimizer._mark_as_processed(param.grad_sample)

    monkeypatch.setattr(opacus_optimizer.DPOptimizer, "clip_and_accumulate", sum_unclipped)
    result = _audit()
    assert result.white_box.verdict == VIOLATED


def test_noise_the_coordinator_can_regenerate_is_flagged():
    result = _audit("privacy.reproducible_noise=true")
    assert result.white_box.verdict == VIOLATED
    assert "explained the updates" in result.white_box.note


def test_example_unit_is_flagged_by_shopper_canaries():
    result = _audit("privacy.unit=example")
    assert result.unit == "example" and result.examples_per_canary > 1
    assert result.white_box.verdict == VIOLATED


def test_cli_json_report_and_exit_status(tmp_path, capsys):
    report = tmp_path / "audit.md"
    code = main(["audit", "--empirical", "--scene", SCENE, "--canaries", "400",
                 "--set", "federation.rounds=1", "--set", "privacy.epsilon=1",
                 "--set", "privacy.reproducible_noise=true", "--json",
                 "--report", str(report)])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["verdict"] == VIOLATED
    assert out["canaries"] == 400 and out["confidence"] == 0.95 and out["seconds"] > 0
    assert {"epsilon_lower", "verdict"} <= set(out["white_box"]) and out["claimed_epsilon"]
    assert "claim violated" in report.read_text()


def test_cli_refuses_bad_arguments(capsys):
    assert main(["audit", "--empirical", "--set", "federation.rounds=1"]) == 2
    assert "--scene" in capsys.readouterr().out
    assert main(["audit", "--empirical", "--scene", SCENE, "--confidence", "1.5"]) == 2
    assert main(["audit"]) == 2


def test_bound_against_the_closed_form():
    # r included canaries all scoring above every excluded one: with delta ~ 0 the bound
    # solves P[Binomial(r, e^eps / (1 + e^eps)) = r] = significance, i.e.
    # eps = logit(significance^(1/r)); the Bonferroni correction over thresholds lowers
    # the significance, so the bound lies between the uncorrected and the fully corrected.
    r, significance = 100, 0.05
    bound = epsilon_lower_bound(np.arange(r) + 1000.0, np.arange(r) * 1.0, 0.95, 1e-12)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert logit(significance ** (1 / r)) > bound > logit((significance / (2 * r + 1)) ** (1 / r))
    # No signal, or scores pointing the wrong way, prove nothing.
    rng = np.random.default_rng(0)
    assert epsilon_lower_bound(rng.normal(size=500), rng.normal(size=500), 0.95, 1e-5) < 0.3
    assert epsilon_lower_bound(np.arange(r) * 1.0, np.arange(r) + 1000.0, 0.95, 1e-5) == 0.0
