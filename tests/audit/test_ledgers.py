import json
import shutil

import numpy as np
import pytest

from fedscene.audit.ledgers import audit
from fedscene.cli.main import main
from fedscene.client.state import SceneState
from fedscene.client.task import RoundRequest, train_round
from fedscene.common.accounting import epsilon
from fedscene.common.ledger import append_entry, entry_hash
from fedscene.common.randomness import SECRET
from tests.client.test_privacy import _config


@pytest.fixture(scope="module")
def spent_state(tmp_path_factory, small_scene):
    """A scene state directory after three DP rounds (budget epsilon 2)."""
    directory = tmp_path_factory.mktemp("state") / "scene0"
    config = _config(rounds=3)
    for r in (1, 2, 3):
        train_round(SceneState(directory, "scene0"), small_scene,
                    RoundRequest(config, "fedper", r, "run-x", 0))
    return directory


def _copy(spent_state, tmp_path):
    target = tmp_path / "scene0"
    shutil.copytree(spent_state, target)
    return target, target / "ledger.jsonl"


def _lines(ledger):
    return ledger.read_text().splitlines()


def _write(ledger, lines):
    ledger.write_text("".join(line + "\n" for line in lines))


def test_intact_ledger_passes_and_accountants_agree(spent_state):
    [result] = audit([spent_state])
    assert result.verdict == "near budget" and result.passed  # spent to the planned budget
    assert result.unit == "shopper"  # the default unit: PRV and PLD agree on it too
    assert result.per_shopper.startswith(f"epsilon {result.epsilon_prv:.4g}, delta")
    assert result.per_purchase.startswith("epsilon ") and "(group of 2 units)" in (
        result.per_purchase)
    assert result.rounds == 3
    assert result.epsilon_recorded == pytest.approx(result.epsilon_prv)
    assert result.epsilon_pld == pytest.approx(result.epsilon_prv, rel=0.02)
    assert result.epsilon_rdp > result.epsilon_prv
    assert result.epsilon_prv <= result.budget_epsilon


def _edit_number(ledger):
    lines = _lines(ledger)
    entry = json.loads(lines[1])
    entry["noise_multiplier"] *= 2
    lines[1] = json.dumps(entry)
    _write(ledger, lines)


@pytest.mark.parametrize(("tamper", "needle"), [
    (_edit_number, "line 2 (round 2): content does not match its hash"),
    (lambda p: _write(p, [_lines(p)[0], _lines(p)[2]]), "line 2 (index 2): chain broken"),
    (lambda p: _write(p, [_lines(p)[i] for i in (0, 2, 1)]), "chain broken"),
    (lambda p: p.write_bytes(p.read_bytes()[:-40]), "line 3 has no final newline"),
    (lambda p: _write(p, _lines(p)[:2]), "entries deleted from the end"),
])
def test_tampering_is_detected(spent_state, tmp_path, tamper, needle):
    state, ledger = _copy(spent_state, tmp_path)
    tamper(ledger)
    [result] = audit([state])
    assert result.verdict == "altered" and not result.passed
    assert any(needle in reason for reason in result.reasons), result.reasons


def _mechanism_entry(ledger, recorded, budget, steps=400, sigma=0.8, rate=0.05):
    true = epsilon([(sigma, rate, steps)], 1e-5)
    append_entry(ledger, {"round": 1, "scene": "forged", "steps": steps, "sample_rate": rate,
                          "noise_multiplier": sigma, "delta": 1e-5, "max_grad_norm": 1.0,
                          "epsilon": recorded(true), "budget_epsilon": budget,
                          "noise_source": SECRET})
    return true


def test_under_reported_epsilon_is_flagged(tmp_path):
    true = _mechanism_entry(tmp_path / "ledger.jsonl", lambda e: e / 2, budget=100.0)
    [result] = audit([tmp_path / "ledger.jsonl"])
    assert result.verdict == "under-reported"
    assert f"{true / 2:.4f} is below the recomputed {true:.4f}" in result.reasons[0]


def test_scene_over_budget_is_flagged(tmp_path):
    true = _mechanism_entry(tmp_path / "ledger.jsonl", lambda e: e, budget=1.0)
    [result] = audit([tmp_path / "ledger.jsonl"])
    assert result.verdict == "over budget" and true > 1.0
    assert result.remaining < 0


def test_rehashed_forgery_is_caught_by_the_state_anchor(spent_state, tmp_path):
    """Editing an entry and re-hashing the chain leaves the state pointing at a lost hash."""
    state, ledger = _copy(spent_state, tmp_path)
    lines = [json.loads(line) for line in _lines(ledger)]
    previous = "0" * 64
    for entry in lines:
        entry["epsilon"] = entry["epsilon"] / 10
        entry["prev_hash"] = previous
        entry["hash"] = entry_hash(entry)
        previous = entry["hash"]
    _write(ledger, [json.dumps(e) for e in lines])
    [result] = audit([state])
    assert result.verdict == "altered"


def test_cli_exit_codes_json_and_report(spent_state, tmp_path, capsys):
    assert main(["audit", str(spent_state), "--json", "--jobs", "1"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["passed"] and payload["ledgers"][0]["scene"] == "scene0"
    state, ledger = _copy(spent_state, tmp_path)
    _edit_number(ledger)
    report = tmp_path / "audit.md"
    assert main(["audit", str(state), "--report", str(report), "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "altered scene0" in out and "line 2 (round 2)" in out
    assert "FAILED" in report.read_text() and (tmp_path / "audit_epsilon.png").exists()
    assert main(["audit", str(tmp_path / "nothing-here")]) == 2


def _train_three(directory, small_scene, **privacy):
    config = _config(rounds=3, **privacy)
    for r in (1, 2, 3):
        train_round(SceneState(directory, "scene0"), small_scene,
                    RoundRequest(config, "fedper", r, "run-y", 0))


def test_example_level_ledger_states_no_bound_for_a_purchase_or_a_shopper(tmp_path,
                                                                         small_scene, capsys):
    _train_three(tmp_path / "scene0", small_scene, unit="example")
    [result] = audit([tmp_path / "scene0"])
    assert result.passed and result.unit == "example"
    most = int(np.bincount(small_scene.train_user).max())
    # A purchase reaches all of its shopper's examples: 1 + 2 (n - 1).
    assert result.per_purchase == f"no bound (group of {2 * most - 1} units)"
    assert result.per_shopper == f"no bound (group of {most} units)"
    assert main(["audit", str(tmp_path / "scene0")]) == 0
    assert "unit example: one purchase: no bound" in capsys.readouterr().out


def test_reproducible_noise_is_reported_not_private(tmp_path, small_scene, capsys):
    _train_three(tmp_path / "scene0", small_scene, reproducible_noise=True)
    [result] = audit([tmp_path / "scene0"])
    assert result.verdict == "not private" and not result.passed
    assert "drawn from a seed other parties know" in result.reasons[0]
    assert main(["audit", str(tmp_path / "scene0")]) == 1
