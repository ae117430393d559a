"""A scene's recent item popularity, counted so that one privacy unit changes it boundedly,
and released with the Gaussian mechanism.

It is the strongest simple signal in shop data (what sells now), so it serves twice: as the
`dp-popularity` baseline and as the popularity prior a scene's model starts from
(`SceneHead`). Counts cover a `Window` of training data: the last days up to a public date,
or all of it. Under the shopper unit each shopper spreads one unit of L2 norm over at most
`items_per_shopper` of the distinct items they bought in the window (drawn at random when
they bought more): 1/sqrt(k) to each of their k items, so adding or removing a shopper moves
the count vector by at most 1 in L2. Under the example unit each training example adds 1 to
its item (L2 sensitivity 1).

Spreading a unit norm is the weighted Gaussian policy of Gopi et al. (2020, "Differentially
private set union"). Against adding 1 to each of m drawn items (sensitivity sqrt(m)) it
changes nothing for a shopper with m items or more and gives a shopper with k < m items
sqrt(m / k) times more weight against the same noise. So the cap can be wide without the
heavy buyers' baskets crowding out the others' (measured, untrained, three noise draws
each: the main job's malls scored 0.426 with 1 to each of 8 items, 0.421 with 16, 0.414
with 32, and 0.428 with the unit norm at any cap from 8 to 64; random-title scenes of 150
shoppers with 16 items each scored 0.145 at a cap of 8 and 0.159 at 16).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fedscene.common.accounting import gaussian_sigma
from fedscene.common.data.scene import SceneDataset, Window


@dataclass(frozen=True)
class DPCounts:
    """Item counts [n_items] released with the Gaussian mechanism, and how."""

    counts: np.ndarray
    epsilon: float
    delta: float
    sensitivity: float
    sigma: float
    unit: str


def exact_counts(dataset: SceneDataset, window: Window) -> np.ndarray:
    """Purchases per local item id in the window, every row counted (a non-private
    reference: one shopper can move it without bound)."""
    rows = window.rows(dataset)
    return np.bincount(dataset.train_item[rows], minlength=dataset.n_items).astype(float)


def bounded_counts(dataset: SceneDataset, unit: str, window: Window, items_per_shopper: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Counts per local item id [n_items] in which one `unit` has bounded influence, and
    that influence's L2 bound (the sensitivity, 1 under either unit). A shopper adds
    1/sqrt(k) to each of their k distinct items in the window, k at most
    `items_per_shopper` (drawn with `rng` when they bought more)."""
    if unit != "shopper":
        return exact_counts(dataset, window), 1.0
    kept = capped_purchases(dataset, window.rows(dataset), items_per_shopper, rng)
    _, shopper, items_each = np.unique(kept[:, 0], return_inverse=True, return_counts=True)
    weights = 1.0 / np.sqrt(items_each[shopper])
    return np.bincount(kept[:, 1], weights=weights, minlength=dataset.n_items), 1.0


def capped_purchases(dataset: SceneDataset, rows: np.ndarray, items_per_shopper: int,
                     rng: np.random.Generator) -> np.ndarray:
    """The distinct (shopper, item) pairs [k, 2] of the training `rows`, at most
    `items_per_shopper` of each shopper's, drawn with `rng` independently of the others':
    what bounds one shopper's influence on popularity and co-purchase counts alike."""
    pairs = np.unique(np.stack([dataset.train_user[rows], dataset.train_item[rows]], 1),
                      axis=0)
    pairs = pairs[rng.permutation(len(pairs))]
    order = np.argsort(pairs[:, 0], kind="stable")  # each shopper's pairs, in random order
    pairs = pairs[order]
    starts = np.r_[0, np.flatnonzero(np.diff(pairs[:, 0])) + 1] if len(pairs) else np.r_[0]
    rank = np.arange(len(pairs)) - np.repeat(starts, np.diff(np.r_[starts, len(pairs)]))
    return pairs[rank < items_per_shopper]


def mean_count_to_noise(units: int, n_items: int, unit: str, items_per_shopper: int,
                        noise_multiplier: float) -> float:
    """The most a release of `bounded_counts` can say per item against its noise, from
    sizes alone: each of `units` units adds at most sqrt(m) in all (a shopper 1/sqrt(k) to
    each of at most m = `items_per_shopper` items; an example 1 to one item, m = 1), so the
    mean count over `n_items` items is at most units x sqrt(m) / n_items, while the noise's
    sigma is `noise_multiplier` (sensitivity 1). Read before releasing: it needs no count."""
    per_unit = items_per_shopper if unit == "shopper" else 1
    mean = units * np.sqrt(per_unit) / max(n_items, 1)
    return mean / noise_multiplier


def release_counts(counts: np.ndarray, sensitivity: float, unit: str, epsilon: float,
                   delta: float, rng: np.random.Generator) -> DPCounts:
    """`counts` plus Gaussian noise calibrated (analytic Gaussian) to (epsilon, delta) at
    `sensitivity`; `rng` draws the noise."""
    sigma = gaussian_sigma(epsilon, delta, sensitivity)
    noisy = counts + rng.normal(0.0, sigma, size=len(counts))
    return DPCounts(noisy, epsilon, delta, sensitivity, sigma, unit)


def prior_scores(counts: np.ndarray) -> np.ndarray:
    """The prior a model adds per item: the counts standardised over the items (mean 0,
    standard deviation 1; all zeros if constant). Linear on purpose: DP noise then enters
    the scores as it entered the counts, where a log would blow up the noise on the many
    items with counts near zero (measured: 0.394 against 0.410 full-HR@10 on the main
    job's malls at epsilon 2)."""
    values = np.asarray(counts, dtype=float)
    spread = values.std()
    if spread == 0:
        return np.zeros(len(values), dtype=np.float32)
    return ((values - values.mean()) / spread).astype(np.float32)


def item_key_hashes(item_keys: np.ndarray) -> np.ndarray:
    """A stable int64 per item key (the source's item id, e.g. a stock code), so that scenes
    can name their items to the coordinator in numeric arrays and it can join them. Not a
    secret: anyone holding a key can hash it."""
    return np.array([int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8).digest(),
                                    "little", signed=True) for key in item_keys],
                    dtype=np.int64)


@dataclass(frozen=True)
class PooledCounts:
    """Popularity counts summed over the scenes of a federation, by hashed item key
    (`item_key_hashes`): `keys` [k] unique, `counts` [k]. Each scene's part is its released
    prior counts, so the pool is post-processing of releases already ledgered."""

    keys: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:  # sorted by key, as `on_catalogue` looks them up
        order = np.argsort(self.keys, kind="stable")
        object.__setattr__(self, "keys", np.asarray(self.keys, dtype=np.int64)[order])
        object.__setattr__(self, "counts", np.asarray(self.counts, dtype=np.float64)[order])

    @classmethod
    def of(cls, parts: list[tuple[np.ndarray, np.ndarray]]) -> PooledCounts:
        """The sum of scenes' (keys, counts), each key counted once per scene."""
        if not parts:
            return cls(np.empty(0, np.int64), np.empty(0))
        keys = np.concatenate([k for k, _ in parts]).astype(np.int64)
        counts = np.concatenate([c for _, c in parts]).astype(np.float64)
        unique, where = np.unique(keys, return_inverse=True)
        return cls(unique, np.bincount(where, weights=counts, minlength=len(unique)))

    def on_catalogue(self, item_keys: np.ndarray) -> np.ndarray:
        """The pooled count of each of a scene's items [n_items] (0 where no scene counted
        it)."""
        hashes = item_key_hashes(item_keys)
        where = np.searchsorted(self.keys, hashes).clip(max=max(len(self.keys) - 1, 0))
        found = (self.keys[where] == hashes) if len(self.keys) else np.zeros(len(hashes), bool)
        return np.where(found, self.counts[where] if len(self.keys) else 0.0, 0.0)
