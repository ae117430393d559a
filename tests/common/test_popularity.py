"""Popularity counts as released and pooled: how far a release stands out of its noise, and
the federation's sum of the scenes' releases by item."""

import numpy as np

from fedscene.common.popularity import DPCounts, PooledCounts, item_key_hashes


def _release(counts, sigma):
    return DPCounts(np.asarray(counts, dtype=float), 4.0, 1e-5, 1.0, sigma, "shopper")


def test_pure_noise_has_no_signal_to_speak_of_and_popularity_has():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 3.0, size=2000)
    assert _release(noise, 3.0).signal_to_noise < 0.1
    popular = noise + rng.exponential(3.0, size=2000)  # counts of spread 3 under the noise
    assert _release(popular, 3.0).signal_to_noise == np.float64(
        np.var(popular) / 9.0 - 1.0) > 0.8
    assert _release(noise, 0.0).signal_to_noise == float("inf")  # exact: all signal
    assert _release(popular, 3.0).stands_out(0.15) and not _release(noise, 3.0).stands_out(0.15)
    # Over few items chance reaches further: 20 items' noise must pass 3 sqrt(2 / 20).
    few = _release(popular[:20], 3.0)
    assert few.signal_to_noise > 0.15 and not few.stands_out(0.15)


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
