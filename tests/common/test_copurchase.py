"""Co-purchase counts bounded per shopper, and factors that keep only what stands above the
release's noise."""

import numpy as np
import pytest
import torch
from scipy import sparse

from fedscene.common.copurchase import (
    bounded_copurchase,
    noisy_copurchase,
    pair_sensitivity,
    significant_factors,
)
from fedscene.common.data.scene import Window, with_training_rows
from fedscene.common.model import LocalItemBias


def test_one_shopper_adds_at_most_the_sensitivity(small_scene):
    rows = Window().rows(small_scene)
    cap = 5
    counts = bounded_copurchase(small_scene, rows, cap, np.random.default_rng(0))
    assert (counts != counts.T).nnz == 0 and counts.diagonal().sum() == 0
    shoppers = np.unique(small_scene.train_user)
    upper = np.triu(counts.toarray(), 1)
    assert upper.sum() <= len(shoppers) * cap * (cap - 1) / 2 and upper.max() <= len(shoppers)
    assert pair_sensitivity(cap) == pytest.approx(np.sqrt(10))
    # With a cap above every shopper's items the counts are exact: removing a shopper takes
    # away 1 from each pair of distinct items they bought, and nothing else.
    wide = bounded_copurchase(small_scene, rows, 10_000, np.random.default_rng(0)).toarray()
    heavy = shoppers[0]
    without = with_training_rows(small_scene, np.flatnonzero(small_scene.train_user != heavy))
    fewer = bounded_copurchase(without, Window().rows(without), 10_000,
                               np.random.default_rng(0)).toarray()
    own = np.unique(small_scene.train_item[small_scene.train_user == heavy])
    expected = np.zeros_like(wide)
    expected[np.ix_(own, own)] = 1
    np.fill_diagonal(expected, 0)
    np.testing.assert_array_equal(wide - fewer, expected)
    assert len(own) > cap  # so the cap is what bounds this shopper's influence
    assert np.linalg.norm(np.triu(expected, 1)) > pair_sensitivity(cap)
    # Capped, that shopper alone moves the upper triangle by exactly the sensitivity.
    alone = with_training_rows(small_scene, np.flatnonzero(small_scene.train_user == heavy))
    theirs = bounded_copurchase(alone, Window().rows(alone), cap, np.random.default_rng(1))
    assert np.linalg.norm(np.triu(theirs.toarray(), 1)) == pytest.approx(pair_sensitivity(cap))


def _planted(n=120, groups=3, strength=30.0, popular=10.0):
    """Counts of shoppers who buy within one of `groups` item groups, on top of a popularity
    direction; and each item's group."""
    group = np.arange(n) % groups
    rng = np.random.default_rng(0)
    weight = rng.uniform(0.5, 1.5, n)
    counts = popular * np.outer(weight, weight) + strength * (group[:, None] == group[None])
    np.fill_diagonal(counts, 0)
    return counts, group


def test_factors_keep_the_structure_above_the_noise_and_drop_popularity():
    counts, group = _planted()
    sigma = 3.0
    released = noisy_copurchase(sparse.csr_matrix(counts), sigma,
                                np.random.default_rng(1))
    factors = significant_factors(released, sigma, rank=8)
    used = np.flatnonzero(np.abs(factors).sum(0) > 0)
    # Three groups on top of popularity: the leading component (popularity) is dropped, the
    # two that tell the groups apart are kept, and nothing of the noise.
    assert used.tolist() == [0, 1]
    assert np.linalg.norm(factors, axis=1).max() == pytest.approx(1.0)
    affinity = factors @ factors.T
    same = group[:, None] == group[None]
    assert affinity[same].mean() > 0 > affinity[~same].mean()


def test_noise_alone_leaves_no_factors():
    zeros = sparse.csr_matrix((150, 150))
    sigma = 5.0
    released = noisy_copurchase(zeros, sigma, np.random.default_rng(2))
    assert not significant_factors(released, sigma, rank=8).any()
    # The same noise read as if it were data (sigma 0) would be kept: the edge is what
    # drops it.
    assert significant_factors(released, 0.0, rank=8).any()


def test_affinity_reads_the_history_direction():
    bias = LocalItemBias(4, copurchase_rank=2)
    bias.set_copurchase(torch.tensor([[1.0, 0.0], [0.5, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    history = torch.tensor([[0, 1], [3, 0]])
    mask = torch.tensor([[True, True], [True, False]])
    scores = bias.copurchase_scores(torch.tensor([[0, 1, 2], [0, 1, 2]]), history, mask)
    # Shopper 0 bought items of the first factor: its candidates score their first factor;
    # shopper 1's only item has no factors (and the masked one does not count): all 0.
    torch.testing.assert_close(scores, torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]))
