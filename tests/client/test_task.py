from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from fedscene.client.state import SceneState, params_digest
from fedscene.client.task import RoundRequest, evaluate_round, restore_model, train_round
from fedscene.common.baselines import content_scorer, popularity_scorer, scene_counts
from fedscene.common.config import ExperimentConfig
from fedscene.common.data import SceneDataset, build_scene, load_raw_dataset
from fedscene.common.errors import FedsceneError
from fedscene.common.evaluation import evaluate_users
from fedscene.common.ledger import read_ledger
from fedscene.common.model import split_state
from fedscene.common.protocol import TOO_FEW_UNITS, TRAINED
from tests.client.test_copurchase import _config as copurchase_config
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


def _flat(shared: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten() for _, v in sorted(shared.items())])


def _update(tmp_path: Path, name: str, small_scene: SceneDataset, config: ExperimentConfig
            ) -> torch.Tensor:
    state = SceneState(tmp_path / name, "scene0")
    outcome = train_round(state, small_scene, RoundRequest(config, "fedper", 1, "run", 7))
    return _flat(outcome.shared)


def test_the_coordinator_cannot_regenerate_the_noise(tmp_path, small_scene):
    """The coordinator knows the seed, round and config it sent. Replaying the client's
    training from all of them (as a client with reproducible noise would run it) must not
    explain the update; with reproducible noise switched on, it does, exactly."""
    config = _config(rounds=3)
    reproducible = config.model_copy(update={"privacy": config.privacy.model_copy(
        update={"reproducible_noise": True})})
    start = _flat(split_state(restore_model(
        SceneState(tmp_path / "start", "scene0"), small_scene,
        RoundRequest(config, "fedper", 1, "run", 7)).state_dict(), ("encoder.",))[0])
    real = _update(tmp_path, "real", small_scene, config)
    again = _update(tmp_path, "again", small_scene, config)
    replay = _update(tmp_path, "replay", small_scene, reproducible)
    replay_again = _update(tmp_path, "replay-again", small_scene, reproducible)
    torch.testing.assert_close(replay, replay_again, rtol=0, atol=0)  # a seed explains it
    # Two identical runs differ, and the server's replay misses the real update by about
    # the update itself (independent noise draws differ by about sqrt(2) x the noise,
    # whatever the step size), not by rounding.
    update = (real - start).norm()
    assert (real - again).norm() > 0.5 * update
    assert (real - replay).norm() > 0.5 * update
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


class KnownAnswer(NamedTuple):
    """A synthetic case of `test_known_answers_...`: where the signal lives and which
    baselines read it."""

    text_signal: float  # share of title words that name the item's topic
    model: dict[str, Any]  # the model's settings in this case
    without: tuple[float, dict[str, Any]]  # the same purchases, the signal taken away
    beaten: tuple[str, ...]  # the baselines reading that signal, beaten by 0.03


# Shoppers of four taste clusters buy items by topic. Category and price, which the
# generator draws from the topic, are blanked, so only titles (`text_signal`: 1, every
# word names the topic; 0, random words) and purchases say what an item is; the purchases
# are the same whatever `text_signal`. Every case keeps the popularity prior (what sells
# is its own signal, and the model must not fall below popularity); in "text only" the
# model has no co-purchase factors, so titles alone tell the tastes apart. Without the
# signal means random titles and no co-purchase factors. Measured (full-HR@10): text only
# 0.219 (start 0.217, without 0.205) against content's 0.164 and popularity's 0.200;
# co-purchase only 0.253 (start 0.254, without 0.205) against 0.200 (content 0.056);
# both 0.256 (start 0.256, without 0.205) against 0.140 and 0.200. Item co-occurrence, a
# non-private reference reading raw co-purchases, scores 0.295 and is not asserted.
KNOWN_ANSWERS = {
    "text only": KnownAnswer(1.0, {"copurchase": False}, (0.0, {"copurchase": False}),
                             ("content",)),
    "co-purchase only": KnownAnswer(0.0, {}, (0.0, {"copurchase": False}), ("popularity",)),
    "both": KnownAnswer(0.5, {}, (0.0, {"copurchase": False}), ("content", "popularity")),
}


def _known_answer_config(text_signal: float, model: dict[str, Any],
                         learning_rate: float | None = None) -> ExperimentConfig:
    """test_copurchase's scenes of 1000 shoppers, seeded noise, the case's model."""
    config = copurchase_config(users=1000, text_signal=text_signal, reproducible_noise=True)
    training = {"learning_rate": learning_rate} if learning_rate else {}
    return config.model_copy(update={"model": config.model.model_copy(update=model),
                                     "training": config.training.model_copy(update=training)})


def _known_answer_scene(config: ExperimentConfig) -> SceneDataset:
    """The case's scene, its items' category and price blanked."""
    raw = load_raw_dataset(config.data)
    raw = replace(raw, items=raw.items.assign(category="", price=1.0))
    return build_scene(raw, "scene0", config.data, config.model)


def _full_hr_after_training(state_dir: Path, scene: SceneDataset, config: ExperimentConfig,
                            rounds: int = 2) -> float:
    """Full-HR@10 of the local arm after `rounds` rounds of the client's real path
    (released prior and co-purchase factors, then DP-SGD)."""
    state = SceneState(state_dir, "scene0")
    for round_ in range(1, rounds + 1):
        assert train_round(state, scene, RoundRequest(config, "local", round_, "r", 0)
                           ).status == TRAINED
    assert any(e.get("algorithm") == "local" for e in
               read_ledger(state_dir / "ledger.jsonl").entries)  # DP-SGD ran, not only releases
    return evaluate_round(state, scene, RoundRequest(config, "local", rounds, "r", 0))[
        "full-hr@10"]


@pytest.mark.parametrize("case", list(KNOWN_ANSWERS))
def test_known_answers_the_learned_model_beats_the_baseline_of_its_signal(tmp_path, case):
    """Each case trains a scene of 1000 shoppers for two rounds at epsilon 8 (shopper
    unit). The learned model beats the baselines that read its case's signal by 0.03
    full-HR@10 and is below neither content similarity nor popularity; it is not below its
    start (the same releases, a step size of 1e-12: training does not lose what the start
    had); and taking the signal away costs it 0.01 or more: it reads that signal."""
    known = KNOWN_ANSWERS[case]
    config = _known_answer_config(known.text_signal, known.model)
    scene = _known_answer_scene(config)
    learned = _full_hr_after_training(tmp_path / "learned", scene, config)
    scores = {name: evaluate_users(scene, scorer)["full-hr@10"].mean() for name, scorer in
              (("content", content_scorer(scene)),
               ("popularity", popularity_scorer(scene_counts(scene))))}
    assert learned > max(scores[name] for name in known.beaten) + 0.03, (learned, scores)
    assert learned >= max(scores.values()), (learned, scores)
    start = _full_hr_after_training(
        tmp_path / "start", scene, _known_answer_config(known.text_signal, known.model, 1e-12),
        1)
    assert learned >= start - 0.005, (learned, start)
    blind_config = _known_answer_config(*known.without)
    blind = _known_answer_scene(blind_config)
    np.testing.assert_array_equal(blind.test_item, scene.test_item)  # the same purchases
    without = _full_hr_after_training(tmp_path / "without", blind, blind_config)
    assert learned > without + 0.01, (learned, without)
