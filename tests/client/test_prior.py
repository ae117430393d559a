"""The popularity prior: released once under DP, ledgered so that it composes with training,
bounded per shopper, kept in the scene, and a real head start for the model."""

import json

import numpy as np
import pytest
import torch

from fedscene.audit.ledgers import audit_ledger
from fedscene.client.prior import set_prior
from fedscene.client.privacy import PrivacyAccount
from fedscene.client.state import SceneState
from fedscene.client.task import RoundRequest, train_round
from fedscene.common.algorithms import shared_prefixes
from fedscene.common.config import DataConfig, ExperimentConfig, ModelConfig
from fedscene.common.data import build_scene, load_raw_dataset
from fedscene.common.data.scene import Window, with_training_rows
from fedscene.common.evaluation import evaluate_users, model_scorer
from fedscene.common.ledger import read_ledger
from fedscene.common.model import SceneModel, split_state
from fedscene.common.popularity import (
    bounded_counts,
    capped_purchases,
    exact_counts,
    prior_scores,
)
from fedscene.common.randomness import reproducible_source, secret_source
from tests.conftest import synthetic_data


def _config(**privacy) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "data": json.loads(synthetic_data(users_per_scene=150).model_dump_json()),
        "model": {"embedding_dim": 8, "hash_buckets": 512, "text_dim": 64, "head_hidden": 8},
        "training": {"batch_size": 32},
        "privacy": {"epsilon": 8.0, "prior_share": 0.25} | privacy,
        "federation": {"rounds": 2}})


@pytest.fixture(scope="module")
def scene():
    config = _config()
    return build_scene(load_raw_dataset(config.data), "scene0", config.data, config.model)


@pytest.fixture(scope="module")
def kitchen():
    data, model = DataConfig(), ModelConfig()
    return build_scene(load_raw_dataset(data), "kitchen", data, model)


def test_first_round_releases_the_prior_and_training_gets_the_rest(tmp_path, scene):
    config = _config(prior_share=0.5)  # epsilon 4: its signal stands out of its noise
    state = SceneState(tmp_path, "scene0")
    for round_ in (1, 2):
        train_round(state, scene, RoundRequest(config, "fedavg", round_, "run", 0))
    entries = read_ledger(tmp_path / "ledger.jsonl").entries
    prior, copurchase, training = entries[0], entries[1], entries[2:]
    assert prior["algorithm"] == "popularity-prior" and len(training) == 2  # released once
    assert copurchase["algorithm"] == "copurchase-factors"  # composed too: client.copurchase
    assert (prior["steps"], prior["sample_rate"]) == (1, 1.0)
    assert prior["max_grad_norm"] == 1.0  # a shopper spreads a unit norm over their items
    assert prior["epsilon"] == pytest.approx(4.0, abs=0.05)  # the analytic Gaussian's
    assert prior["noise_source"] == secret_source().description
    # Every mechanism entry says what was read as public, and why that costs nothing.
    assert all("catalogue" in e["public"] and "known limits" in e["public"]
               for e in entries)
    # Calibration counted it: the campaign reaches the budget, not budget + prior.
    assert training[-1]["epsilon"] == pytest.approx(8.0, abs=0.05)
    result = audit_ledger(tmp_path / "ledger.jsonl")
    assert result.passed and result.epsilon_prv == pytest.approx(8.0, abs=0.1)
    # The prior stays in the scene: saved with its state, never in what fedavg shares.
    saved = state.load_local()
    assert saved["head.local_ids.prior"].abs().sum() > 0
    shared, _ = split_state(saved, shared_prefixes("fedavg"))
    assert "head.local_ids.prior" not in shared


def test_without_room_or_with_too_few_shoppers_nothing_is_released(tmp_path, scene):
    for name, config in (("no room", _config(prior_share=0.999, copurchase_share=0.0005)),
                         ("too few", _config(min_units=10_000))):
        account = PrivacyAccount(SceneState(tmp_path / name, "scene0"), config.privacy)
        model = SceneModel(config.model, scene.n_items)
        assert set_prior(model, scene, config, account, secret_source(), run_id="r",
                         round_=1) is None, name
        assert not model.head.local_ids.has_prior and account.history == [], name


def test_without_dp_the_prior_is_exact_but_needs_min_units(scene):
    """Without DP the prior is the exact counts; from fewer than min_units shoppers it is
    not kept either (such counts are chance, and they lowered small scenes' scores). The
    scene's 150 shoppers are counted, not its thousands of examples (without DP training
    takes examples one by one)."""
    assert scene.n_train > 1000
    for min_units, kept in ((150, True), (151, False), (1000, False)):
        config = _config(enabled=False, min_units=min_units)
        model = SceneModel(config.model, scene.n_items)
        assert set_prior(model, scene, config, None, secret_source(), run_id="r",
                         round_=1) is None
        assert model.head.local_ids.has_prior == kept, min_units
        if kept:
            np.testing.assert_allclose(model.head.local_ids.prior.numpy(),
                                       prior_scores(exact_counts(scene, Window())), rtol=1e-5)


def test_one_shopper_moves_the_counts_by_at_most_the_sensitivity(kitchen):
    window = Window.of(90, "2011-12-10")
    rows = window.rows(kitchen)
    assert 0 < len(rows) < kitchen.n_train
    assert kitchen.train_time[rows].min() >= np.datetime64("2011-09-11")
    cap = 8
    counts, sensitivity = bounded_counts(kitchen, "shopper", window, cap,
                                         np.random.default_rng(0))
    assert sensitivity == 1.0
    shoppers = np.unique(kitchen.train_user[rows])
    assert counts.sum() <= np.sqrt(cap) * len(shoppers) and counts.max() <= len(shoppers)
    # Removing a shopper takes away 1/sqrt(k) from each of their k items and nothing else:
    # a change of exactly 1 in L2, the sensitivity. Compared at a cap above everyone's
    # items, so that no draw moves with the rows; a purchase repeated counts once.
    items_of = {u: np.unique(kitchen.train_item[rows][kitchen.train_user[rows] == u])
                for u in shoppers}
    heavy = max(shoppers, key=lambda u: len(items_of[u]))
    light = next(u for u in shoppers if 2 <= len(items_of[u]) < cap)  # 1, 1/k, 1/sqrt(k) differ
    again = rows[kitchen.train_user[rows] == light][:1]
    twice = with_training_rows(kitchen, np.r_[np.arange(kitchen.n_train), again])
    full, _ = bounded_counts(twice, "shopper", window, 10_000, np.random.default_rng(0))
    for shopper in (heavy, light):
        keep = twice.train_user != shopper
        fewer, _ = bounded_counts(with_training_rows(twice, np.flatnonzero(keep)),
                                  "shopper", window, 10_000, np.random.default_rng(0))
        own = items_of[shopper]
        change = full - fewer
        assert np.flatnonzero(np.abs(change) > 1e-12).tolist() == own.tolist()
        np.testing.assert_allclose(change[own], 1 / np.sqrt(len(own)))
        assert np.linalg.norm(change) == pytest.approx(1.0)
    # Under the cap the heavy buyer still adds a unit norm, over `cap` of their items, each
    # kept as often as the others whoever else is in the data (a draw that read the others'
    # purchases would let removing one shopper move the rest).
    assert len(items_of[heavy]) > cap
    alone = with_training_rows(kitchen, np.flatnonzero(kitchen.train_user == heavy))
    counts, _ = bounded_counts(alone, "shopper", window, cap, np.random.default_rng(0))
    assert np.linalg.norm(counts) == pytest.approx(1.0) and np.count_nonzero(counts) == cap
    draws = 300
    for data in (kitchen, alone):
        kept = np.zeros(kitchen.n_items)
        for seed in range(draws):
            pairs = capped_purchases(data, window.rows(data), cap, np.random.default_rng(seed))
            kept[pairs[pairs[:, 0] == heavy, 1]] += 1
        np.testing.assert_allclose(kept[items_of[heavy]] / draws,
                                   cap / len(items_of[heavy]), atol=0.12)
    # The window ends at a public date: removing the shopper who bought last changes no
    # other shopper's rows in it (a window ending at the latest purchase would).
    latest = kitchen.train_user[np.argmax(kitchen.train_time)]
    keep = kitchen.train_user != latest
    others = with_training_rows(kitchen, np.flatnonzero(keep))
    inside = set(map(tuple, np.stack([kitchen.train_user[rows], kitchen.train_item[rows]], 1)))
    after = window.rows(others)
    assert set(map(tuple, np.stack([others.train_user[after], others.train_item[after]], 1))) \
        == {pair for pair in inside if pair[0] != latest}


def test_the_prior_is_a_head_start_on_real_baskets(kitchen):
    """Known answer: recent popularity is a strong signal in Online Retail, so an untrained
    model that has the (exact, no-DP) prior ranks better than one with content alone."""
    config = ExperimentConfig(privacy={"enabled": False}, model={"popularity_days": 90},
                              data={"as_of": "2011-12-10"})
    torch.manual_seed(0)
    content_only = SceneModel(config.model, kitchen.n_items)
    with_prior = SceneModel(config.model, kitchen.n_items)
    with_prior.load_state_dict(content_only.state_dict())
    set_prior(with_prior, kitchen, config, None, reproducible_source(0), run_id="r", round_=1)
    prior = with_prior.head.local_ids.prior.numpy()
    assert np.corrcoef(prior, exact_counts(kitchen, Window.of(90, "2011-12-10")))[0, 1] > 0.999
    base = evaluate_users(kitchen, model_scorer(content_only))["full-hr@10"].mean()
    started = evaluate_users(kitchen, model_scorer(with_prior))["full-hr@10"].mean()
    assert started > base + 0.03


def test_training_and_prior_read_only_the_recent_window(tmp_path, scene):
    config = _config()
    config = config.model_copy(update={"training": config.training.model_copy(
        update={"recent_days": 30.0})})
    config = config.model_copy(update={"data": config.data.model_copy(
        update={"as_of": "2024-12-31"})})
    train_round(SceneState(tmp_path, "scene0"), scene,
                RoundRequest(config, "fedper", 1, "run", 0))
    prior, copurchase, training = read_ledger(tmp_path / "ledger.jsonl").entries
    window = np.unique(scene.train_user[Window.of(30.0, "2024-12-31").rows(scene)])
    assert 50 <= len(window) < len(np.unique(scene.train_user))
    assert prior["units"] == copurchase["units"] == training["units"] == len(window)
