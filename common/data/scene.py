"""One scene's training and evaluation arrays: split by basket, histories and negatives.

A basket is what a shopper bought at one time (one invoice), or within
`data.session_gap_minutes`. Each shopper's latest `data.test_baskets` baskets are the test
set and their earlier baskets are training (`split = "basket"`), so a basket never spans
train and test and no training interaction is later than a test one of the same shopper.
With `split = "shoppers"` a share of shoppers is held out whole: their latest baskets are
test and their earlier ones only the context a test example sees (cold start).

A training example is one interaction with the shopper's `history_length` preceding items;
a test example uses the latest items before the test basket. The items a test shopper had
before the test (`seen_user`, `seen_item`) are excluded from full-catalogue ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse

from fedscene.common.config import DataConfig, ModelConfig
from fedscene.common.data.contract import RawDataset
from fedscene.common.errors import DataError
from fedscene.common.features import (
    category_buckets,
    price_buckets,
    text_tokens,
    text_vectors,
    tfidf,
)

PAD = -1


@dataclass(frozen=True)
class SceneDataset:
    """Arrays of one scene; item ids are local (0..n_items-1), PAD marks empty history."""

    scene: str
    item_keys: np.ndarray      # [n_items] the items' ids in the source (for cross-scene joins)
    item_tfidf: sparse.csr_matrix  # [n_items, hash_buckets] public TF-IDF of the titles
    item_text: np.ndarray      # [n_items, text_dim] its fixed projection (unit vectors)
    item_price: np.ndarray     # [n_items]
    item_category: np.ndarray  # [n_items]
    train_user: np.ndarray     # [n_train]
    train_item: np.ndarray     # [n_train]
    train_time: np.ndarray     # [n_train] datetime64
    train_history: np.ndarray  # [n_train, history_length]
    test_user: np.ndarray      # [n_test]
    test_item: np.ndarray      # [n_test]
    test_time: np.ndarray      # [n_test]
    test_history: np.ndarray   # [n_test, history_length]
    test_negatives: np.ndarray  # [n_test, eval_negatives]
    n_users: int
    seen_user: np.ndarray      # test shoppers' items before the test (excluded from ranking)
    seen_item: np.ndarray
    ranked_items: np.ndarray   # the scene's catalogue as item indices (all of them, unless
                               # the arrays hold a larger pooled catalogue)

    @property
    def n_items(self) -> int:
        return len(self.item_keys)

    @property
    def n_train(self) -> int:
        return len(self.train_item)


def with_training_rows(dataset: SceneDataset, rows: np.ndarray) -> SceneDataset:
    """The scene with only the given training rows (test rows, histories and catalogue
    unchanged)."""
    return replace(dataset, train_user=dataset.train_user[rows],
                   train_item=dataset.train_item[rows], train_time=dataset.train_time[rows],
                   train_history=dataset.train_history[rows])


@dataclass(frozen=True)
class Window:
    """The last `days` days up to `end` (a public date: `data.as_of`), or all rows when
    `days` is 0. The end is never read from the data: one shopper's latest purchase would
    otherwise move the window, and with it which rows of every other shopper count."""

    days: float = 0.0
    end: np.datetime64 | None = None

    @classmethod
    def of(cls, days: float, as_of: str) -> Window:
        return cls(days, np.datetime64(as_of, "s") if as_of else None)

    def rows(self, dataset: SceneDataset) -> np.ndarray:
        """Indices of the training rows inside the window."""
        if self.days <= 0:
            return np.arange(dataset.n_train)
        if self.end is None:
            raise ValueError("a window of days needs its public end date (data.as_of)")
        start = self.end - np.timedelta64(int(self.days * 86400), "s")
        times = dataset.train_time.astype("datetime64[s]")
        return np.flatnonzero((times >= start) & (times <= self.end))


def recent_training(dataset: SceneDataset, window: Window) -> SceneDataset:
    """The scene with only its training rows inside `window`; histories still reach back
    before it."""
    return dataset if window.days <= 0 else with_training_rows(dataset, window.rows(dataset))


def _histories(users: np.ndarray, items: np.ndarray, baskets: np.ndarray, length: int
               ) -> np.ndarray:
    """For rows sorted by (user, time): the `length` items the user bought before the row's
    basket (not the rest of the same basket, which a next-basket test never sees)."""
    out = np.full((len(items), length), PAD, dtype=np.int64)
    if len(items) == 0:
        return out
    rows = np.arange(len(items))
    user_start = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    first_of_user = np.repeat(user_start, np.diff(np.r_[user_start, len(items)]))
    new_basket = np.r_[True, (np.diff(users) != 0) | (np.diff(baskets) != 0)]
    basket_start = np.maximum.accumulate(np.where(new_basket, rows, 0))
    for lag in range(1, length + 1):
        source = basket_start - lag
        ok = source >= first_of_user
        out[ok, lag - 1] = items[source[ok]]
    return out


def sample_negatives(users: np.ndarray, positives_of: dict[int, np.ndarray], n_items: int,
                     count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct items per row, uniform over the items the row's user has not used.

    Vectorised rejection sampling: invalid draws (a positive, or a repeat within the row)
    are redrawn until none is left. Deterministic for a given generator state.
    """
    users = np.asarray(users, dtype=np.int64)
    used = {u: len(v) for u, v in positives_of.items()}
    worst = max((used.get(int(u), 0) for u in np.unique(users)), default=0)
    if n_items - worst < count:
        raise DataError(f"a user has used {worst} of the scene's {n_items} items, so {count} "
                        f"distinct negatives cannot be drawn; lower the negatives count")
    keys = np.sort(np.concatenate(
        [u * n_items + v for u, v in positives_of.items()] or [np.empty(0, np.int64)]))
    out = rng.integers(0, n_items, size=(len(users), count))
    invalid = np.ones_like(out, dtype=bool)
    while True:
        flat = users[:, None] * n_items + out
        where = np.searchsorted(keys, flat).clip(max=max(len(keys) - 1, 0))
        invalid = (keys[where] == flat) if len(keys) else np.zeros_like(out, dtype=bool)
        order = np.argsort(out, axis=1, kind="stable")
        ranked = np.take_along_axis(out, order, axis=1)
        repeat = np.zeros_like(invalid)
        repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
        np.put_along_axis(invalid, order, np.take_along_axis(invalid, order, axis=1) | repeat,
                          axis=1)
        if not invalid.any():
            return out
        out[invalid] = rng.integers(0, n_items, size=int(invalid.sum()))


def _positives(users: np.ndarray, items: np.ndarray) -> dict[int, np.ndarray]:
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    return {int(u[0]): np.unique(i) for u, i in zip(np.split(users, bounds),
                                                    np.split(items, bounds), strict=True)
            if len(u)}


def _basket_ordinals(users: np.ndarray, times: np.ndarray, gap_minutes: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by (user, time): each row's basket number within its user (0 the
    oldest), and each user's basket count."""
    gap = np.timedelta64(int(gap_minutes * 60e9), "ns")
    new = np.ones(len(users), dtype=bool)
    if len(users) > 1:
        new[1:] = (users[1:] != users[:-1]) | ((times[1:] - times[:-1]) > gap)
    basket = np.cumsum(new) - 1
    first = np.r_[0, np.flatnonzero(np.diff(users)) + 1] if len(users) else np.empty(0, int)
    first_basket = np.zeros(int(users.max(initial=-1)) + 1, dtype=np.int64)
    first_basket[users[first]] = basket[first]
    ordinal = basket - first_basket[users]
    counts = np.zeros_like(first_basket)
    np.maximum.at(counts, users, ordinal + 1)
    return ordinal, counts


def _test_rows(users: np.ndarray, ordinal: np.ndarray, baskets: np.ndarray,
               counts: np.ndarray, data: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """(is_test, is_train) per row: the latest baskets of eligible shoppers are test; the
    rest trains, except the earlier baskets of shoppers held out whole (context only)."""
    eligible = (baskets > data.test_baskets) & (counts >= data.min_user_interactions)
    is_test = eligible[users] & (ordinal >= (baskets - data.test_baskets)[users])
    if data.split == "basket":
        return is_test, ~is_test
    candidates = np.flatnonzero(eligible)
    rng = np.random.default_rng([data.seed, 5])
    held = rng.choice(candidates, int(round(data.test_shoppers * len(candidates))),
                      replace=False)
    held_out = np.zeros(len(baskets), dtype=bool)
    held_out[held] = True
    return is_test & held_out[users], ~held_out[users]


def build_scene(raw: RawDataset, scene: str, data: DataConfig, model: ModelConfig
                ) -> SceneDataset:
    """Split one scene by basket, attach histories and the seeded evaluation negatives."""
    rows = raw.interactions[raw.interactions["scene"] == scene]
    if rows.empty:
        raise DataError(f"{raw.origin}: scene {scene!r} has no interactions; check data.scenes")
    # Implicit feedback: the first time a user takes an item is the interaction.
    rows = rows.sort_values(["user", "time", "item"], kind="stable")
    rows = rows.drop_duplicates(["user", "item"], keep="first")
    if rows["user"].nunique() < 2:
        raise DataError(f"{raw.origin}: scene {scene!r} has only one user; a scene needs at "
                        f"least two to split and evaluate, remove it from data.scenes")
    item_keys, local_item = np.unique(rows["item"].to_numpy(), return_inverse=True)
    _, local_user = np.unique(rows["user"].to_numpy(), return_inverse=True)
    times = rows["time"].to_numpy()
    order = np.lexsort((local_item, times, local_user))
    users, items, times = local_user[order], local_item[order], times[order]

    counts = np.bincount(users)
    ordinal, baskets = _basket_ordinals(users, times, data.session_gap_minutes)
    is_test, is_train = _test_rows(users, ordinal, baskets, counts, data)
    test_users, test_items = users[is_test], items[is_test]
    # What a test shopper had before the test: their earlier baskets.
    before = ~is_test & np.isin(users, np.unique(test_users))
    seen_users, seen_items = users[before], items[before]
    test_history = np.full((len(test_users), data.history_length), PAD, dtype=np.int64)
    for user in np.unique(test_users):
        latest = seen_items[seen_users == user][::-1][: data.history_length]
        test_history[test_users == user, : len(latest)] = latest

    train_users, train_items = users[is_train], items[is_train]
    train_times = times[is_train]
    train_history = _histories(train_users, train_items, ordinal[is_train],
                               data.history_length)
    if data.max_train_per_scene and len(train_items) > data.max_train_per_scene:
        keep = np.sort(np.argsort(train_times, kind="stable")[-data.max_train_per_scene:])
        train_users, train_items = train_users[keep], train_items[keep]
        train_history, train_times = train_history[keep], train_times[keep]

    n_items = len(item_keys)
    rng = np.random.default_rng([data.seed, 99, _scene_seed(scene)])
    eval_count = min(data.eval_negatives, max(1, n_items - int(counts.max())))
    test_negatives = sample_negatives(test_users, _positives(users, items), n_items,
                                      eval_count, rng)

    catalogue = raw.items.set_index("item").loc[item_keys]
    item_tfidf = tfidf(text_tokens(catalogue["text"].tolist(), model), model.hash_buckets)
    return SceneDataset(
        scene=scene,
        item_keys=item_keys,
        item_tfidf=item_tfidf,
        item_text=text_vectors(item_tfidf, model),
        item_price=price_buckets(catalogue["price"].to_numpy(), model),
        item_category=category_buckets(catalogue["category"].tolist(), model),
        train_user=train_users,
        train_item=train_items,
        train_time=train_times,
        train_history=train_history,
        test_user=test_users,
        test_item=test_items,
        test_time=times[is_test],
        test_history=test_history,
        test_negatives=test_negatives,
        n_users=int(len(counts)),
        seen_user=seen_users,
        seen_item=seen_items,
        ranked_items=np.arange(n_items),
    )


def _scene_seed(scene: str) -> int:
    return int.from_bytes(scene.encode("utf-8")[:8].ljust(8, b"\0"), "little") % (2**31)
