"""Popularity counts as released and pooled: how much a release could say against its noise,
and the federation's sum of the scenes' releases by item."""

import numpy as np
import pytest

from fedscene.common.accounting import gaussian_sigma
from fedscene.common.popularity import PooledCounts, item_key_hashes, mean_count_to_noise


def test_the_mean_count_against_the_noise_comes_from_sizes_alone():
    # 400 shoppers spreading a unit norm over at most 8 items each (at most sqrt(8) each in
    # all) over 200 items: a mean count of at most 2 sqrt(8), against noise of sigma 2
    # (sensitivity 1) at noise multiplier 2.
    assert mean_count_to_noise(400, 200, "shopper", 8, 2.0) == pytest.approx(2 * np.sqrt(8) / 2)
    # Germany in the main job's window against a mall at a sixteenth of the epsilon, at the
    # default cap of 16 items: the country's release could say far less per item.
    germany = mean_count_to_noise(51, 1662, "shopper", 16, gaussian_sigma(4.0, 1e-5, 1.0))
    home = mean_count_to_noise(550, 828, "shopper", 16, gaussian_sigma(0.5, 1e-5, 1.0))
    assert germany < 0.12 < 0.35 < home


def test_item_keys_hash_stably_and_apart():
    hashes = item_key_hashes(np.array(["85123A", "i00001", "85123A"]))
    assert hashes.dtype == np.int64
    # The same on every machine and process (the coordinator joins scenes by it).
    assert hashes[0] == 3141760557156334012 and hashes[1] == -6475482887161136761
    assert hashes[0] == hashes[2]


def test_pooled_counts_sum_the_scenes_by_item_and_map_onto_a_catalogue():
    a = (item_key_hashes(np.array(["x", "y"])), np.array([10.0, 1.0]))
    b = (item_key_hashes(np.array(["y", "z"])), np.array([2.0, 5.0]))
    pooled = PooledCounts.of([a, b])
    np.testing.assert_allclose(pooled.on_catalogue(np.array(["z", "y", "x", "new"])),
                               [5.0, 3.0, 10.0, 0.0])  # an item no scene counted: 0
    assert not PooledCounts.of([]).on_catalogue(np.array(["x"])).any()
    # As a scene receives it: keys in any order.
    keys, counts = pooled.keys[::-1], pooled.counts[::-1]
    np.testing.assert_allclose(PooledCounts(keys, counts).on_catalogue(np.array(["x", "z"])),
                               [10.0, 5.0])
