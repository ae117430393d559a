import json

import pytest

from fedscene.client.state import SceneState
from fedscene.client.task import RoundRequest, train_round
from fedscene.common.accounting import epsilon
from fedscene.common.config import ExperimentConfig
from fedscene.common.errors import FedsceneError
from fedscene.common.ledger import read_ledger
from tests.conftest import synthetic_data


def _config(rounds=3, **privacy):
    return ExperimentConfig.model_validate({
        "data": json.loads(synthetic_data().model_dump_json()),
        "model": {"embedding_dim": 8, "hash_buckets": 512, "head_hidden": 8},
        "training": {"batch_size": 64},
        "privacy": {"epsilon": 2.0} | privacy,
        "federation": {"rounds": rounds}})


def _train(state_dir, scene, config, round_):
    state = SceneState(state_dir, "scene0")  # a fresh object each call: as after a restart
    return train_round(state, scene, RoundRequest(config, "fedper", round_, "run-a", 0))


def test_epsilon_is_cumulative_and_budget_reached_at_last_round(tmp_path, small_scene):
    config = _config(rounds=3)
    for r in (1, 2, 3):
        _train(tmp_path, small_scene, config, r)
    entries = read_ledger(tmp_path / "ledger.jsonl").entries
    history = [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in entries]
    for i, entry in enumerate(entries):
        assert entry["epsilon"] == pytest.approx(epsilon(history[: i + 1], entry["delta"]))
    per_round = epsilon(history[-1:], entries[-1]["delta"])
    assert entries[-1]["epsilon"] > per_round * 1.3  # composition, not one round's figure
    assert 2.0 - 0.05 <= entries[-1]["epsilon"] <= 2.0
    assert all(e["privacy_unit"].startswith("record") and e["sampling"] == "poisson"
               for e in entries)


def test_more_rounds_than_budget_stop_at_limit(tmp_path, small_scene):
    config = _config(rounds=2)
    outcomes = [_train(tmp_path, small_scene, config, r).status for r in (1, 2, 3, 4)]
    assert outcomes == ["trained", "trained", "budget-exhausted", "budget-exhausted"]
    entries = read_ledger(tmp_path / "ledger.jsonl").entries
    assert len(entries) == 2 and max(e["epsilon"] for e in entries) <= 2.0


def test_new_run_continues_the_same_budget(tmp_path, small_scene):
    _train(tmp_path, small_scene, _config(rounds=2), 1)
    # A later run with a new plan length keeps the original calibration and spend.
    status = [_train(tmp_path, small_scene, _config(rounds=5), r).status for r in (1, 2, 3)]
    assert status == ["trained", "budget-exhausted", "budget-exhausted"]


def test_budget_cannot_be_changed_in_place(tmp_path, small_scene):
    _train(tmp_path, small_scene, _config(rounds=2), 1)
    with pytest.raises(FedsceneError, match="epsilon different from the config"):
        _train(tmp_path, small_scene, _config(rounds=2, epsilon=4.0), 2)


def test_damaged_ledger_stops_training(tmp_path, small_scene):
    config = _config(rounds=3)
    _train(tmp_path, small_scene, config, 1)
    _train(tmp_path, small_scene, config, 2)
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(ledger.read_text().splitlines()[0] + "\n")  # tail deleted
    with pytest.raises(FedsceneError, match="ledger truncated"):
        _train(tmp_path, small_scene, config, 3)


def test_torn_write_is_not_accepted_silently(tmp_path, small_scene):
    config = _config(rounds=3)
    _train(tmp_path, small_scene, config, 1)
    ledger = tmp_path / "ledger.jsonl"
    with open(ledger, "ab") as handle:
        handle.write(b'{"round": 2, "steps"')  # crash mid-append
    assert _train(tmp_path, small_scene, config, 2).status == "trained"
    assert list(tmp_path.glob("ledger.jsonl.torn-*"))
    read = read_ledger(ledger)
    assert read.intact and [e["round"] for e in read.entries] == [1, 2]
