"""Popularity pooled over the federation: a scene too small to count its own starts from
the others' released counts; only releases the ledger holds leave a scene, and only under
an algorithm that shares."""

import json

import numpy as np
import pytest

from fedscene.client.pooled import popularity_part, set_pooled_prior
from fedscene.client.prior import set_prior
from fedscene.client.privacy import PrivacyAccount
from fedscene.client.state import SceneState
from fedscene.client.task import RoundRequest, evaluate_round, train_round
from fedscene.common.baselines import popularity_scorer, scene_counts
from fedscene.common.config import ExperimentConfig
from fedscene.common.data import build_scene, load_raw_dataset
from fedscene.common.data.scene import Window
from fedscene.common.evaluation import evaluate_users, model_scorer
from fedscene.common.ledger import read_ledger
from fedscene.common.model import SceneModel
from fedscene.common.popularity import (
    PooledCounts,
    exact_counts,
    item_key_hashes,
    prior_scores,
)
from fedscene.common.randomness import reproducible_source, secret_source
from tests.conftest import synthetic_data


def _config(users: int = 150, **privacy) -> ExperimentConfig:
    # Random titles (content says nothing); scenes that sell one catalogue and share tastes
    # and popularity, as the countries of one shop.
    data = synthetic_data(users_per_scene=users, text_signal=0.0, shift=0.0, num_items=200,
                          items_per_scene=200)
    return ExperimentConfig.model_validate({
        "data": json.loads(data.model_dump_json()),
        # The prior's weight for the pool too: the default 0.25 suits real titles, whose
        # content similarity is strong (client.pooled); random ones would drown it.
        "model": {"embedding_dim": 8, "hash_buckets": 512, "text_dim": 64, "head_hidden": 8,
                  "copurchase": False, "pooled_prior_weight": 2.0},
        "training": {"batch_size": 32},
        "privacy": {"epsilon": 8.0} | privacy,
        "federation": {"rounds": 2}})


def _scenes(config):
    raw = load_raw_dataset(config.data)
    return [build_scene(raw, s, config.data, config.model) for s in ("scene0", "scene1")]


def test_a_scene_without_a_prior_starts_from_the_federations_popularity(tmp_path):
    """Known answer, federation carrying knowledge: titles are random, so a scene with no
    prior of its own ranks by chance; with the other scene's prior, released under DP at
    epsilon 4, it ranks by what sells in the federation, close to its own exact
    popularity."""
    config = _config(users=600)
    big, small = _scenes(config)
    donor = SceneModel(config.model, big.n_items)
    account = PrivacyAccount(SceneState(tmp_path, "scene0"), config.privacy)
    assert set_prior(donor, big, config, account, reproducible_source(1), run_id="r",
                     round_=1) is not None
    pooled = PooledCounts.of([popularity_part(donor, big)])
    alone = SceneModel(config.model, small.n_items)
    with_pool = SceneModel(config.model, small.n_items)
    with_pool.load_state_dict(alone.state_dict())
    assert set_pooled_prior(with_pool, small, pooled)
    scores = {name: evaluate_users(small, model_scorer(model))["full-hr@10"].mean()
              for name, model in (("alone", alone), ("pooled", with_pool))}
    own = evaluate_users(small, popularity_scorer(scene_counts(small)))["full-hr@10"].mean()
    assert scores["pooled"] > scores["alone"] + 0.05
    assert scores["pooled"] > own - 0.03


def test_a_scene_with_its_own_prior_keeps_it_and_an_empty_pool_changes_nothing(scene_pair):
    config, (big, small) = scene_pair
    model = SceneModel(config.model, big.n_items)
    set_prior(model, big, config, None, secret_source(), run_id="r", round_=1)  # exact
    before = model.head.local_ids.prior.clone()
    pooled = PooledCounts(item_key_hashes(big.item_keys), np.arange(big.n_items, dtype=float))
    assert not set_pooled_prior(model, big, pooled)
    assert not model.head.local_ids.pooled.any()
    assert (model.head.local_ids.prior == before).all()
    fresh = SceneModel(config.model, small.n_items)
    assert not set_pooled_prior(fresh, small, None)
    assert not set_pooled_prior(fresh, small, PooledCounts.of([]))


@pytest.fixture(scope="module")
def scene_pair():
    config = _config()
    return config, _scenes(config)


def test_only_the_ledgered_release_leaves_and_only_under_an_algorithm_that_shares(
        tmp_path, scene_pair):
    config, (scene, _) = scene_pair
    config = config.model_copy(update={"privacy": config.privacy.model_copy(
        update={"prior_share": 0.5})})
    state = SceneState(tmp_path / "fedavg", "scene0")
    sent = train_round(state, scene, RoundRequest(config, "fedavg", 1, "r", 0)).popularity
    keys, counts = sent
    np.testing.assert_array_equal(keys, item_key_hashes(scene.item_keys))
    saved = state.load_local()
    np.testing.assert_array_equal(counts, saved["head.local_ids.prior_counts"].numpy())
    # The released counts, whose scores the scene ranks by, not the exact ones.
    np.testing.assert_allclose(saved["head.local_ids.prior"].numpy(), prior_scores(counts),
                               rtol=1e-5)
    assert np.abs(counts - exact_counts(scene, Window())).max() > 1.0
    [prior] = [e for e in read_ledger(state.ledger_path).entries
               if e["algorithm"] == "popularity-prior"]
    assert "sent to the coordinator" in prior["released"]
    assert "head.local_ids.pooled" not in saved  # what arrives is not kept
    # The same again in round 2 (no second release), and nothing under `local`.
    again = train_round(state, scene, RoundRequest(config, "fedavg", 2, "r", 0)).popularity
    np.testing.assert_array_equal(again[1], counts)
    local = SceneState(tmp_path / "local", "scene0")
    assert train_round(local, scene, RoundRequest(config, "local", 1, "r", 0)).popularity is None
    # With the pooled weight at 0 nothing is sent, whatever the algorithm.
    unpooled = config.model_copy(update={"model": config.model.model_copy(
        update={"pooled_prior_weight": 0.0})})
    off = SceneState(tmp_path / "off", "scene0")
    assert train_round(off, scene, RoundRequest(unpooled, "fedavg", 1, "r", 0)).popularity is None


def test_a_scene_whose_counts_cannot_beat_the_noise_releases_nothing(tmp_path, scene_pair):
    config, (scene, _) = scene_pair
    config = config.model_copy(update={"privacy": config.privacy.model_copy(
        update={"prior_share": 0.01})})  # epsilon 0.08: sigma far above the mean count
    state = SceneState(tmp_path, "scene0")
    for round_ in (1, 2):
        outcome = train_round(state, scene, RoundRequest(config, "fedavg", round_, "r", 0))
        assert outcome.popularity is None
    assert not state.load_local()["head.local_ids.prior"].any()
    entries = read_ledger(state.ledger_path).entries
    assert [e["algorithm"] for e in entries] == ["fedavg"] * 2  # nothing spent on a prior
    assert entries[-1]["epsilon"] == pytest.approx(8.0, abs=0.05)  # training has it all


def test_a_scene_too_small_to_train_evaluates_with_the_pool_it_is_sent(tmp_path, scene_pair):
    config, (big, small) = scene_pair
    config = config.model_copy(update={"privacy": config.privacy.model_copy(
        update={"min_units": 10_000})})
    state = SceneState(tmp_path, "scene1")
    assert train_round(state, small, RoundRequest(config, "fedper", 1, "r", 0)).status == (
        "too-few-units")
    pooled = PooledCounts(item_key_hashes(big.item_keys), exact_counts(big, Window()))
    plain = evaluate_round(state, small, RoundRequest(config, "fedper", 1, "r", 0))
    helped = evaluate_round(state, small, RoundRequest(config, "fedper", 1, "r", 0,
                                                       pooled=pooled))
    assert helped["full-hr@10"] > plain["full-hr@10"] + 0.03
