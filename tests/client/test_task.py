import pytest
import torch

from fedscene.client.state import SceneState, params_digest
from fedscene.client.task import RoundRequest, evaluate_round, train_round
from fedscene.common.errors import FedsceneError
from fedscene.common.ledger import read_ledger
from fedscene.common.model import split_state
from fedscene.common.protocol import TOO_FEW_UNITS, TRAINED
from tests.client.test_privacy import _config


def test_reply_holds_only_shared_parameters_and_head_persists(tmp_path, small_scene):
    config = _config(rounds=3)
    state = SceneState(tmp_path, "scene0")
    first = train_round(state, small_scene, RoundRequest(config, "fedper", 1, "r", 0))
    assert first.shared and all(k.startswith("encoder.") for k in first.shared)
    second = train_round(state, small_scene,
                         RoundRequest(config, "fedper", 2, "r", 0, shared=first.shared))
    assert all(k.startswith("encoder.") for k in second.shared)
    entries = read_ledger(tmp_path / "ledger.jsonl").entries
    assert entries[1]["local_state_in"] == entries[0]["local_state_out"]
    saved = state.load_local()
    assert saved and all(k.startswith("head.") for k in saved)
    assert params_digest(saved) == entries[1]["local_state_out"]


def test_fedavg_keeps_local_item_ids_and_local_sends_nothing(tmp_path, small_scene):
    config = _config(rounds=2)
    fedavg = train_round(SceneState(tmp_path / "a", "scene0"), small_scene,
                         RoundRequest(config, "fedavg", 1, "r", 0))
    assert any(k.startswith("head.") for k in fedavg.shared)
    assert not any(k.startswith("head.local_ids.") for k in fedavg.shared)
    local = train_round(SceneState(tmp_path / "b", "scene0"), small_scene,
                        RoundRequest(config, "local", 1, "r", 0))
    assert local.shared == {}


def test_fedrep_trains_head_then_encoder(tmp_path, small_scene):
    config = _config(rounds=2)
    outcome = train_round(SceneState(tmp_path, "scene0"), small_scene,
                          RoundRequest(config, "fedrep", 1, "r", 0))
    entry = read_ledger(tmp_path / "ledger.jsonl").entries[0]
    assert entry["head_steps"] > 0 and entry["steps"] > entry["head_steps"]
    assert all(k.startswith("encoder.") for k in outcome.shared)


def test_evaluate_uses_received_encoder(tmp_path, small_scene):
    # Without the content term, whose weight (10) can outrank a one-round correction and
    # leave the ranking, hence the metrics, unchanged whatever the encoder.
    base = _config(rounds=2)
    config = base.model_copy(update={"model": base.model.model_copy(
        update={"content_weight": 0.0})})
    state = SceneState(tmp_path, "scene0")
    outcome = train_round(state, small_scene, RoundRequest(config, "fedper", 1, "r", 0))
    metrics = evaluate_round(state, small_scene,
                             RoundRequest(config, "fedper", 1, "r", 0, shared=outcome.shared))
    zeroed = {k: torch.zeros_like(v) for k, v in outcome.shared.items()}
    other = evaluate_round(state, small_scene,
                           RoundRequest(config, "fedper", 1, "r", 0, shared=zeroed))
    assert metrics["auc"] != other["auc"]
    assert 0.0 <= metrics["hr@10-low"] <= metrics["hr@10"] <= metrics["hr@10-high"] <= 1.0
    assert (tmp_path / "eval" / "round_0001.json").exists()
    assert split_state(state.load_local(), ("encoder.",))[0] == {}


def _update(tmp_path, name, small_scene, config):
    state = SceneState(tmp_path / name, "scene0")
    outcome = train_round(state, small_scene, RoundRequest(config, "fedper", 1, "run", 7))
    return torch.cat([v.flatten() for _, v in sorted(outcome.shared.items())])


def test_the_coordinator_cannot_regenerate_the_noise(tmp_path, small_scene):
    """The coordinator knows the seed, round and config it sent. Replaying the client's
    training from all of them (as a client with reproducible noise would run it) must not
    explain the update; with reproducible noise switched on, it does, exactly."""
    config = _config(rounds=3)
    reproducible = config.model_copy(update={"privacy": config.privacy.model_copy(
        update={"reproducible_noise": True})})
    real = _update(tmp_path, "real", small_scene, config)
    again = _update(tmp_path, "again", small_scene, config)
    replay = _update(tmp_path, "replay", small_scene, reproducible)
    replay_again = _update(tmp_path, "replay-again", small_scene, reproducible)
    torch.testing.assert_close(replay, replay_again, rtol=0, atol=0)  # a seed explains it
    # Two identical runs differ, and the server's replay misses the real update by about
    # the noise itself, not by rounding.
    assert (real - again).norm() > 0.1 * real.norm()
    assert (real - replay).norm() > 0.1 * real.norm()
    entries = read_ledger(tmp_path / "real" / "ledger.jsonl").entries
    assert entries[0]["noise_source"].startswith("os-entropy")
    replayed = read_ledger(tmp_path / "replay" / "ledger.jsonl").entries
    assert "NOT private" in replayed[0]["noise_source"]


def test_the_server_cannot_set_or_probe_a_scenes_head(tmp_path, small_scene):
    """Only what the algorithm shares may come from the server: a head parameter (which
    would overwrite the scene's own, or probe its catalogue size by shape) is refused."""
    config = _config(rounds=2)
    state = SceneState(tmp_path, "scene0")
    probe = {"head.local_ids.bias.weight": torch.zeros(1, 1)}
    with pytest.raises(FedsceneError, match="does not share"):
        train_round(state, small_scene, RoundRequest(config, "fedper", 1, "r", 0,
                                                     shared=probe))


def test_a_scene_too_small_for_dp_keeps_its_start_and_spends_nothing(tmp_path, small_scene):
    config = _config(rounds=2, min_units=10_000)
    state = SceneState(tmp_path, "scene0")
    outcome = train_round(state, small_scene, RoundRequest(config, "fedper", 1, "r", 0))
    assert (outcome.status, outcome.shared) == (TOO_FEW_UNITS, {})
    assert read_ledger(tmp_path / "ledger.jsonl").entries == []
    assert state.load_local() is None
    without_dp = config.model_copy(update={"privacy": config.privacy.model_copy(
        update={"enabled": False})})
    assert train_round(state, small_scene,
                       RoundRequest(without_dp, "fedper", 1, "r", 0)).status == TRAINED
