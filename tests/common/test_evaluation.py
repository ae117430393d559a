"""Full-catalogue and sampled metrics, and the baselines every report carries."""

from dataclasses import replace

import numpy as np
import pytest

from fedscene.common.accounting import gaussian_delta
from fedscene.common.baselines import (
    content_scorer,
    cooccurrence_scorer,
    dp_popularity,
    popularity_scorer,
    scene_counts,
)
from fedscene.common.config import DataConfig, ModelConfig
from fedscene.common.data import build_scene, load_raw_dataset
from fedscene.common.data.scene import Window
from fedscene.common.evaluation import evaluate_users
from fedscene.common.metrics import full_ranking_metrics


@pytest.fixture(scope="module")
def kitchen():
    data = DataConfig()
    return build_scene(load_raw_dataset(data), "kitchen", data, ModelConfig())


def test_full_ranking_metrics_known_answers():
    relevant = np.zeros(50, dtype=bool)
    relevant[[3, 7]] = True
    perfect = np.where(relevant, 1.0, 0.0)
    assert full_ranking_metrics(perfect, relevant) == {
        "full-hr@10": 1.0, "full-ndcg@10": 1.0, "full-recall@20": 1.0}
    constant = np.zeros(50)  # ties go against the relevant items: no credit
    assert full_ranking_metrics(constant, relevant)["full-recall@20"] == 0.0
    worst = -perfect
    assert full_ranking_metrics(worst, relevant)["full-hr@10"] == 0.0


def test_full_catalogue_never_ranks_an_item_the_shopper_bought_before(kitchen):
    """A scorer that rates the shopper's earlier items above their held-out basket must
    still get full credit: the earlier items are excluded from the ranking."""
    users = np.unique(kitchen.test_user)
    seen_by = {u: kitchen.seen_item[kitchen.seen_user == u] for u in users}
    basket = {u: kitchen.test_item[kitchen.test_user == u] for u in users}
    assert max(len(v) for v in seen_by.values()) >= 20  # enough to crowd a top 10

    def loves_the_past(dataset, rows):
        scores = np.zeros((len(rows), len(dataset.ranked_items)))
        for slot, row in enumerate(rows):
            user = int(dataset.test_user[row])
            scores[slot, basket[user]] = 50.0
            scores[slot, seen_by[user]] = 100.0
        return scores

    result = evaluate_users(kitchen, loves_the_past)
    assert result["full-hr@10"].min() == 1.0
    assert result["full-ndcg@10"].min() == pytest.approx(1.0)


def test_an_oracle_scores_one_and_metrics_cover_every_test_shopper(kitchen):
    basket = {u: kitchen.test_item[kitchen.test_user == u] for u in np.unique(kitchen.test_user)}

    def oracle(dataset, rows):
        scores = np.zeros((len(rows), len(dataset.ranked_items)))
        for slot, row in enumerate(rows):
            scores[slot, basket[int(dataset.test_user[row])]] = 1.0
        return scores

    result = evaluate_users(kitchen, oracle)
    assert len(result["user"]) == len(basket)
    for name in ("hr@10", "full-hr@10", "full-ndcg@10", "full-recall@20"):
        assert result[name].min() == pytest.approx(1.0), name


def test_content_vectors_read_only_the_catalogue(kitchen):
    """Shuffling (or dropping) the interactions leaves the content baseline's item vectors
    and scores as they were: it reads titles only."""
    rng = np.random.default_rng(0)
    order = rng.permutation(kitchen.n_train)
    shuffled = replace(kitchen, train_user=kitchen.train_user[order],
                       train_item=rng.permutation(kitchen.train_item),
                       train_history=kitchen.train_history[order])
    rows = np.arange(5)
    np.testing.assert_array_equal(content_scorer(kitchen)(kitchen, rows),
                                  content_scorer(shuffled)(shuffled, rows))
    assert not np.array_equal(cooccurrence_scorer(kitchen)(kitchen, rows),
                              cooccurrence_scorer(shuffled)(kitchen, rows))


@pytest.mark.parametrize(("unit", "sensitivity"), [("shopper", 1.0), ("example", 1.0)])
@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_dp_popularity_noise_matches_its_epsilon(kitchen, unit, sensitivity, epsilon):
    delta = 1e-5
    released = dp_popularity(kitchen, unit, epsilon, delta, Window(), 8,
                             np.random.default_rng(1))
    assert released.sensitivity == pytest.approx(sensitivity)
    # The Gaussian mechanism with this sigma and sensitivity is exactly (epsilon, delta)-DP.
    assert gaussian_delta(epsilon, released.sigma, sensitivity) == pytest.approx(delta,
                                                                                 rel=1e-6)
    assert gaussian_delta(epsilon, released.sigma * 0.95, sensitivity) > delta
    exact = scene_counts(kitchen)
    if unit == "example":  # the noise is what was added to the exact counts
        noise = released.counts - exact
        assert abs(noise.std() - released.sigma) < 0.1 * released.sigma


def test_baselines_beat_chance_on_real_baskets(kitchen):
    chance = 10 / 100
    for scorer in (popularity_scorer(scene_counts(kitchen)), content_scorer(kitchen)):
        assert evaluate_users(kitchen, scorer)["hr@10"].mean() > chance
