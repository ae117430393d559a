"""Privacy accounting of DP-SGD: composition, calibration and independent recomputation.

A scene's spend is the composition of every (noise multiplier, sample rate, steps) it has
ever run under its budget. PRV (Opacus) is the tight figure that budgets are enforced with;
RDP (Opacus) over-states it and is kept as a second figure; PLD (Google's dp-accounting) is
an independent implementation the audit cross-checks with.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import version

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

Composition = list[tuple[float, float, int]]  # (noise multiplier, sample rate, steps)



@contextmanager
def _quiet() -> Iterator[None]:
    """Silence two warnings of Opacus's accountants, only while they run here.

    RDP advises wider alpha orders when the optimum is at the edge; RDP is only the
    secondary (looser) figure here, so the advice is noise in every client's log. At
    sample rate 1 (a scene smaller than a batch) PRV takes log(1 - q) = log(0) in a branch
    np.where then discards; the result is right and the warning is noise.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        warnings.filterwarnings("ignore", message="divide by zero encountered in log",
                                category=RuntimeWarning, module=r"opacus\.accountants")
        yield

MECHANISM = "poisson-subsampled-gaussian (DP-SGD)"
SAMPLING = "poisson"


def compress(history: Iterable[tuple[float, float, int]]) -> Composition:
    """Merge runs of the same mechanism; composition does not depend on order."""
    merged: dict[tuple[float, float], int] = {}
    for sigma, rate, steps in history:
        merged[(float(sigma), float(rate))] = merged.get((float(sigma), float(rate)), 0) + int(
            steps)
    return [(sigma, rate, steps) for (sigma, rate), steps in merged.items() if steps > 0]


def epsilon(history: Iterable[tuple[float, float, int]], delta: float,
            accountant: str = "prv") -> float:
    """Epsilon of the whole composition at `delta` (0 when nothing ran)."""
    composition = compress(history)
    if not composition:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in composition):
        return float("inf")
    counter = create_accountant(mechanism=accountant)
    counter.history = composition
    with _quiet():
        return float(counter.get_epsilon(delta=delta))


def pld_epsilon(history: Iterable[tuple[float, float, int]], delta: float) -> float:
    """Epsilon by Google's dp-accounting PLD accountant (add/remove neighbours).

    Imported here: dp-accounting takes 1.5 s to import and only the audit needs it, while
    a deployed client may start a fresh process for every message.
    """
    from dp_accounting import dp_event, pld

    composition = compress(history)
    if not composition:
        return 0.0
    counter = pld.PLDAccountant()
    for sigma, rate, steps in composition:
        event = dp_event.PoissonSampledDpEvent(rate, dp_event.GaussianDpEvent(sigma))
        counter.compose(event, steps)
    return float(counter.get_epsilon(delta))


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: str = "prv") -> float:
    """Smallest noise multiplier (to 0.01 in epsilon) whose `steps` steps stay in budget."""
    with _quiet():
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=steps,
                                          accountant=accountant))


def accountant_versions() -> dict[str, str]:
    return {"opacus": version("opacus"), "dp-accounting": version("dp-accounting")}


def calibrate_noise_after(history: Iterable[tuple[float, float, int]], target_epsilon: float,
                          delta: float, sample_rate: float, steps: int,
                          accountant: str = "prv", tolerance: float = 0.01) -> float:
    """Smallest noise multiplier (to `tolerance` in epsilon) for `steps` more steps such that
    they, composed with what `history` already spent, stay within `target_epsilon`.

    Raises ValueError when the history alone has reached the budget.
    """
    spent = list(history)
    if epsilon(spent, delta, accountant) >= target_epsilon:
        raise ValueError(f"the history already spends the whole budget of {target_epsilon}")

    def total(sigma: float) -> float:
        return epsilon(spent + [(sigma, sample_rate, steps)], delta, accountant)

    low, high = 0.0, 10.0
    while total(high) > target_epsilon:
        low, high = high, 2.0 * high
        if high > 1e6:
            raise ValueError("no noise multiplier below 1e6 fits the remaining budget")
    while total(high) < target_epsilon - tolerance:
        middle = (low + high) / 2.0
        if total(middle) > target_epsilon:
            low = middle
        else:
            high = middle
        if high - low < 1e-6:
            break
    return high


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest noise standard deviation for which the Gaussian mechanism with this L2
    `sensitivity` is (epsilon, delta)-DP: the analytic Gaussian mechanism (Balle & Wang,
    ICML 2018, Theorem 8), exact rather than the classic sqrt(2 ln(1.25/delta)) bound."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    def excess(sigma: float) -> float:
        a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
        return float(norm.cdf(a - b) - math.exp(epsilon + norm.logcdf(-a - b)) - delta)

    high = sensitivity
    while excess(high) > 0:
        high *= 2.0
    return float(brentq(excess, high / 2.0 ** 40, high, xtol=1e-12 * high))


def gaussian_delta(epsilon: float, sigma: float, sensitivity: float) -> float:
    """The delta at `epsilon` of the Gaussian mechanism with noise `sigma` (exact)."""
    from scipy.stats import norm

    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    return float(norm.cdf(a - b) - math.exp(epsilon + norm.logcdf(-a - b)))
