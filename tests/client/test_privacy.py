import json
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from fedscene.audit.ledgers import audit_ledger
from fedscene.client.privacy import BudgetSpent, PrivacyAccount
from fedscene.client.state import SceneState
from fedscene.client.task import RoundRequest, released_metrics, train_round
from fedscene.common.accounting import epsilon
from fedscene.common.config import ExperimentConfig
from fedscene.common.errors import FedsceneError
from fedscene.common.ledger import read_ledger
from fedscene.common.privacy_units import ShopperUnit
from tests.conftest import synthetic_data


def _config(rounds=3, **privacy):
    return ExperimentConfig.model_validate({
        "data": json.loads(synthetic_data().model_dump_json()),
        # No popularity prior nor co-purchase factors: these tests count training's ledger
        # entries (the releases' own entries and their composition with training are tested
        # in test_prior.py and test_copurchase.py).
        "model": {"embedding_dim": 8, "hash_buckets": 512, "text_dim": 64, "head_hidden": 8,
                  "popularity_prior": False, "copurchase": False},
        "training": {"batch_size": 16},
        # Scenes of 30-60 shoppers: below the default min_units, which would keep them
        # from training at all (tested in test_task.py).
        "privacy": {"epsilon": 2.0, "min_units": 5} | privacy,
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
    assert all(e["unit"] == "shopper" and e["sampling"] == "poisson"
               and e["neighbouring"] == "add-or-remove-one-shopper"
               and e["units"] == len(set(small_scene.train_user.tolist()))
               and e["noise_source"].startswith("os-entropy") for e in entries)
    assert entries[-1]["guarantee"]["shopper"].startswith("epsilon 1.9")


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


def _grown(scene, keep_users):
    """The scene as it was when only `keep_users` shoppers had bought (data grows later)."""
    keep = np.isin(scene.train_user, keep_users)
    return replace(scene, train_user=scene.train_user[keep], train_item=scene.train_item[keep],
                   train_time=scene.train_time[keep], train_history=scene.train_history[keep])


def test_grown_data_starts_a_new_campaign_under_the_lifetime_budget(tmp_path, small_scene):
    early = _grown(small_scene, np.arange(30))
    short = _config(rounds=2, epsilon=2.0, scenes={"scene0": {"epsilon": 2.0,
                                                              "campaign_epsilon": 1.0}})
    for r in (1, 2):
        _train(tmp_path, early, short, r)
    first = json.loads((tmp_path / "privacy.json").read_text())
    assert first["campaign"] == 1 and first["units"] == 30
    # Later: all 60 shoppers, a new campaign that may spend the whole lifetime budget.
    for r in (1, 2):
        assert _train(tmp_path, small_scene, _config(rounds=2), r).status == "trained"
    second = json.loads((tmp_path / "privacy.json").read_text())
    assert second["campaign"] == 2 and second["units"] == 60
    assert second["delta"] == first["delta"]  # one lifetime delta
    entries = read_ledger(tmp_path / "ledger.jsonl").entries
    assert [e["campaign"] for e in entries] == [1, 1, 2, 2]
    assert entries[1]["epsilon"] <= 1.0 + 1e-9
    history = [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in entries]
    assert 1.9 <= epsilon(history, entries[-1]["delta"]) <= 2.0 + 1e-9
    audited = audit_ledger(tmp_path / "ledger.jsonl")
    assert audited.verdict in ("ok", "near budget") and audited.epsilon_prv <= 2.0 + 1e-9


def test_spent_budget_refuses_a_new_campaign(tmp_path, small_scene):
    config = _config(rounds=2)
    for r in (1, 2):
        _train(tmp_path, _grown(small_scene, np.arange(30)), config, r)
    account = PrivacyAccount(SceneState(tmp_path, "scene0"), config.privacy)
    with pytest.raises(BudgetSpent, match=r"privacy\.epsilon.*nothing is left"):
        account.plan_campaign(ShopperUnit(16), 60, 0.25, 8)
    # In a round, the grown scene says its budget is spent, like any spent scene.
    assert _train(tmp_path, small_scene, config, 3).status == "budget-exhausted"
    assert len(read_ledger(tmp_path / "ledger.jsonl").entries) == 2


def test_metrics_leave_only_when_released_and_ledgered(tmp_path, small_scene):
    quiet = _config(rounds=2)
    request = RoundRequest(quiet, "fedper", 1, "run-a", 0)
    state = SceneState(tmp_path / "quiet", "scene0")
    outcome = train_round(state, small_scene, request)
    assert released_metrics(state, request, outcome.metrics, small_scene.n_train) == {}
    assert [e["kind"] for e in read_ledger(state.ledger_path).entries] == ["training"]

    loud = quiet.model_copy(update={"federation": quiet.federation.model_copy(
        update={"release_metrics": True, "send_num_examples": True})})
    request = RoundRequest(loud, "fedper", 1, "run-a", 0)
    state = SceneState(tmp_path / "loud", "scene0")
    outcome = train_round(state, small_scene, request)
    sent = released_metrics(state, request, outcome.metrics, small_scene.n_train)
    assert {"train-loss", "num-examples"} <= set(sent)
    release = read_ledger(state.ledger_path).entries[-1]
    assert release["kind"] == "release" and release["mechanism"] == "released without DP"
    assert set(release["released"]) == set(sent)
    audited = audit_ledger(state.ledger_path)
    assert audited.releases_without_dp == sorted(sent)
    assert audited.verdict == "released without DP" and not audited.passed
    # A later round with reproducible noise, after the release: named, not a crash.
    replay = loud.model_copy(update={"privacy": loud.privacy.model_copy(
        update={"reproducible_noise": True})})
    train_round(state, small_scene, RoundRequest(replay, "fedper", 2, "run-a", 0))
    audited = audit_ledger(state.ledger_path)
    assert audited.verdict == "not private" and "entries [2]" in audited.reasons[0]


def test_campaign_beyond_lifetime_is_refused_at_load():
    with pytest.raises(ValidationError, match="campaign_epsilon 3.0 exceeds"):
        _config(scenes={"scene0": {"epsilon": 2.0, "campaign_epsilon": 3.0}})


def test_zero_examples_per_shopper_is_refused():
    with pytest.raises(ValidationError, match="max_examples_per_shopper"):
        _config(max_examples_per_shopper=0)
