"""One scene's training and evaluation arrays: temporal split, histories and negatives.

Each user's interactions are sorted by time; the latest `test_fraction` of them (at most
`max_test_per_user`, at least one) are the test set, so no training interaction is later
than a test interaction of the same user. A training example is one interaction with the
user's `history_length` preceding items; a test example uses the user's last training items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedscene.common.config import DataConfig, ModelConfig
from fedscene.common.data.contract import RawDataset
from fedscene.common.errors import DataError
from fedscene.common.features import category_buckets, price_buckets, text_tokens

PAD = -1


@dataclass(frozen=True)
class SceneDataset:
    """Arrays of one scene; item ids are local (0..n_items-1), PAD marks empty history."""

    scene: str
    item_keys: np.ndarray      # [n_items] the items' ids in the source (for cross-scene joins)
    item_tokens: np.ndarray    # [n_items, max_tokens]
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

    @property
    def n_items(self) -> int:
        return len(self.item_keys)

    @property
    def n_train(self) -> int:
        return len(self.train_item)


def _histories(users: np.ndarray, items: np.ndarray, length: int) -> np.ndarray:
    """For rows sorted by (user, time): the `length` previous items of the same user."""
    out = np.full((len(items), length), PAD, dtype=np.int64)
    if len(items) == 0:
        return out
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    position = np.arange(len(items)) - np.repeat(starts, np.diff(np.r_[starts, len(items)]))
    for lag in range(1, length + 1):
        ok = position >= lag
        out[ok, lag - 1] = items[np.flatnonzero(ok) - lag]
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


def build_scene(raw: RawDataset, scene: str, data: DataConfig, model: ModelConfig
                ) -> SceneDataset:
    """Split one scene by time, attach histories and the seeded evaluation negatives."""
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
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    position = np.arange(len(users)) - starts[users]
    n_test = np.clip(np.floor(counts * data.test_fraction).astype(int), 1,
                     data.max_test_per_user)
    n_test[counts < data.min_user_interactions] = 0
    is_test = position >= (counts - n_test)[users]

    train_users, train_items = users[~is_test], items[~is_test]
    train_history = _histories(train_users, train_items, data.history_length)
    # A test example sees the user's last training items, newest first.
    last_train = {}
    for user in np.unique(train_users):
        seq = train_items[train_users == user][::-1][: data.history_length]
        last_train[int(user)] = seq
    test_users, test_items = users[is_test], items[is_test]
    test_history = np.full((len(test_users), data.history_length), PAD, dtype=np.int64)
    for row, user in enumerate(test_users):
        seq = last_train.get(int(user), np.empty(0, dtype=np.int64))
        test_history[row, : len(seq)] = seq

    if data.max_train_per_scene and len(train_items) > data.max_train_per_scene:
        keep = np.argsort(times[~is_test], kind="stable")[-data.max_train_per_scene:]
        keep.sort()
        train_users, train_items = train_users[keep], train_items[keep]
        train_history = train_history[keep]
        train_times = times[~is_test][keep]
    else:
        train_times = times[~is_test]

    n_items = len(item_keys)
    rng = np.random.default_rng([data.seed, 99, _scene_seed(scene)])
    eval_count = min(data.eval_negatives, max(1, n_items - int(counts.max())))
    test_negatives = sample_negatives(test_users, _positives(users, items), n_items,
                                      eval_count, rng)

    catalogue = raw.items.set_index("item").loc[item_keys]
    return SceneDataset(
        scene=scene,
        item_keys=item_keys,
        item_tokens=text_tokens(catalogue["text"].tolist(), model),
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
    )


def _scene_seed(scene: str) -> int:
    return int.from_bytes(scene.encode("utf-8")[:8].ljust(8, b"\0"), "little") % (2**31)


def train_negatives(dataset: SceneDataset, count: int, seed: int, round_: int) -> np.ndarray:
    """Training negatives for one round, avoiding each user's training positives."""
    rng = np.random.default_rng([seed, round_, _scene_seed(dataset.scene)])
    positives = _positives(dataset.train_user, dataset.train_item)
    return sample_negatives(dataset.train_user, positives, dataset.n_items, count, rng)
