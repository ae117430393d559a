"""A partner's ledger checked against the heads the coordinator recorded from its replies:
a forgery consistent enough to pass the ledger's own audit is caught."""

import json

import pytest

from fedscene.audit.coordinator_record import REWRITTEN, check_against
from fedscene.audit.ledgers import audit
from fedscene.cli.main import main
from fedscene.client.state import SceneState
from fedscene.client.task import RoundRequest, train_round
from fedscene.common.accounting import epsilon
from fedscene.common.ledger import entry_hash, read_ledger
from tests.client.test_privacy import _config


@pytest.fixture()
def campaign(tmp_path, small_scene):
    """Two DP rounds of scene0, and the coordinator's record of its ledger head after each
    (what each reply carried)."""
    state = SceneState(tmp_path / "scene0", "scene0")
    heads = []
    for round_ in (1, 2):
        train_round(state, small_scene, RoundRequest(_config(rounds=2), "fedper", round_, "r"))
        heads.append({"round": round_, "phase": "train", "scene": "scene0",
                      "head": read_ledger(state.ledger_path).head})
    record = tmp_path / "federation.json"
    record.write_text(json.dumps({"ledger_heads": heads}))
    return state, record


def _forge_more_noise(state: SceneState) -> None:
    """Rewrite the ledger as a determined partner would: every entry claims twice the noise
    and the epsilon that noise would give, the chain and the state's head re-made, so the
    ledger verifies on its own and the audit recomputes the forged (smaller) epsilon."""
    entries, history, previous = read_ledger(state.ledger_path).entries, [], None
    for entry in entries:
        entry["noise_multiplier"] *= 2
        history.append((entry["noise_multiplier"], entry["sample_rate"], entry["steps"]))
        entry["epsilon"] = epsilon(history, entry["delta"])
        entry["epsilon_rdp"] = epsilon(history, entry["delta"], "rdp")
        if previous is not None:
            entry["prev_hash"] = previous
        entry["hash"] = entry_hash(entry)
        previous = entry["hash"]
    state.ledger_path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    status = json.loads((state.directory / "status.json").read_text())
    (state.directory / "status.json").write_text(json.dumps(status | {"ledger_head": previous}))


def test_an_honest_ledger_holds_every_recorded_head(campaign):
    state, record = campaign
    results = audit([state.directory])
    assert check_against(results, record) == 1
    assert results[0].passed and results[0].verdict != REWRITTEN


def test_a_consistent_forgery_passes_alone_and_fails_against_the_record(campaign, capsys):
    state, record = campaign
    _forge_more_noise(state)
    [alone] = audit([state.directory])
    assert alone.passed, alone.reasons  # the ledger's own chain and arithmetic agree
    results = audit([state.directory])
    check_against(results, record)
    assert results[0].verdict == REWRITTEN and not results[0].passed
    assert "rewritten or truncated" in results[0].reasons[-1]
    assert main(["audit", str(state.directory), "--coordinator", str(record)]) == 1
    assert main(["audit", str(state.directory)]) == 0


def test_a_record_of_other_scenes_is_refused(campaign, tmp_path):
    state, _ = campaign
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"ledger_heads": [{"round": 1, "phase": "train",
                                                   "scene": "elsewhere", "head": "0" * 64}]}))
    assert main(["audit", str(state.directory), "--coordinator", str(other)]) == 2
