import pytest

from fedscene.common.accounting import calibrate_noise, compress, epsilon, pld_epsilon


def test_compress_merges_identical_mechanisms():
    assert compress([(1.0, 0.1, 5), (1.0, 0.1, 7), (2.0, 0.1, 1)]) == [(1.0, 0.1, 12),
                                                                        (2.0, 0.1, 1)]


def test_calibration_reaches_budget_without_exceeding_it():
    sigma = calibrate_noise(3.0, 1e-5, 0.05, 200)
    spent = epsilon([(sigma, 0.05, 200)], 1e-5)
    assert 3.0 - 0.05 <= spent <= 3.0


def test_accountants_agree_and_rdp_is_looser():
    history = [(1.1, 0.02, 500)]
    prv, pld, rdp = (epsilon(history, 1e-5), pld_epsilon(history, 1e-5),
                     epsilon(history, 1e-5, "rdp"))
    assert prv == pytest.approx(pld, rel=0.05)
    assert rdp > prv


def test_nothing_spent_and_no_noise():
    assert epsilon([], 1e-5) == 0.0
    assert epsilon([(0.0, 0.1, 3)], 1e-5) == float("inf")


def test_calibration_after_earlier_training_spends_exactly_the_rest():
    from fedscene.common.accounting import calibrate_noise_after

    history = [(1.2, 0.05, 100)]
    earlier = epsilon(history, 1e-5)
    sigma = calibrate_noise_after(history, 4.0, 1e-5, 0.5, 20)
    total = epsilon(history + [(sigma, 0.5, 20)], 1e-5)
    assert earlier < total <= 4.0 and total >= 4.0 - 0.02
    assert sigma > calibrate_noise(4.0, 1e-5, 0.5, 20)  # less budget left: more noise
    with pytest.raises(ValueError, match="whole budget"):
        calibrate_noise_after(history, earlier * 0.9, 1e-5, 0.5, 20)
