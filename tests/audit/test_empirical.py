"""The empirical audit flags broken mechanisms and finds the real one consistent.

Each case audits one campaign (2 rounds) of the embedded `toys` mall's real training at a
claimed epsilon of 1 (or 8) with 1000 canary shoppers per adversary. The broken mechanisms
are the flaws the ledger cannot show: noise off, clipping off, noise the coordinator can
regenerate from the seeds it sent, and an example-level unit audited with shopper canaries.
"""

import json

import numpy as np
import pytest

from fedscene.audit.empirical import (
    CONSISTENT,
    VIOLATED,
    epsilon_lower_bound,
)
from fedscene.audit.positive_controls import audit_control
from fedscene.cli.main import main
from fedscene.simulations.configs import default_config_path

SCENE = "toys"


def _audit(control: str = "real", epsilon: float = 1.0, examples: int | None = None):
    return audit_control(control, default_config_path(),
                         ["federation.rounds=2", f"privacy.epsilon={epsilon}"], SCENE,
                         canaries=1000, seed=3, examples=examples)


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_real_mechanism_is_consistent(epsilon):
    result = _audit(epsilon=epsilon)
    assert result.claimed_epsilon == pytest.approx(epsilon, abs=0.02)
    assert result.white_box.epsilon_lower <= result.claimed_epsilon
    assert result.black_box.epsilon_lower <= result.claimed_epsilon
    assert result.verdict == CONSISTENT
    assert result.white_box.note == ""  # secret noise: replaying the seeds explains nothing
    # What perfect guesses would prove with these canaries: above a claim of 1, not of 8,
    # so at 8 "consistent" is certain; what can fail there is the audit's power: a correct
    # mechanism at epsilon 8 leaks enough for the white-box bound to be clearly positive.
    assert 3.0 < result.white_box.epsilon_ceiling < 6.0
    if epsilon == 8.0:
        assert result.white_box.epsilon_lower > 0.2


@pytest.mark.parametrize("control", ["noise-off", "clipping-off", "seeded-noise",
                                     "example-unit"])
def test_broken_mechanisms_are_flagged(control):
    # A canary shopper with 20 examples: a purchase crosses about that many in this data.
    result = _audit(control, examples=20)
    assert result.white_box.verdict == VIOLATED
    assert result.white_box.epsilon_lower > 1.5 * result.claimed_epsilon
    assert result.verdict == VIOLATED
    if control == "seeded-noise":
        assert "explained the updates" in result.white_box.note
    if control == "example-unit":
        assert result.unit == "example" and result.examples_per_canary == 20


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
    capsys.readouterr()
    # Ghost clipping never materialises a unit's gradient: no canary can join it.
    assert main(["audit", "--empirical", "--scene", SCENE, "--canaries", "50",
                 "--set", "privacy.grad_sample_mode=ghost"]) == 2
    said = capsys.readouterr().out
    assert "privacy.grad_sample_mode = 'ghost'" in said and "ew, hooks" in said
    # A scene with fewer privacy units than min_units trains nothing: said as such, not as
    # a spent budget.
    assert main(["audit", "--empirical", "--scene", SCENE, "--canaries", "50",
                 "--set", "privacy.min_units=100000", "--set", "federation.rounds=1"]) == 2
    said = capsys.readouterr().out
    assert "trained no round" in said and "privacy.min_units 100000" in said


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
