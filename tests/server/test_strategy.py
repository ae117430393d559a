import re

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.metadata import Metadata

from fedscene.common.errors import ConfigError
from fedscene.server.strategy import (
    RejectedReply,
    SceneStrategy,
    reply_popularity,
    reply_update,
)

EXPECTED = {"encoder.w": np.zeros((2, 3), dtype=np.float32),
            "encoder.b": np.zeros(3, dtype=np.float32)}


def _content(arrays, metrics=None, status="trained", scene="s"):
    return RecordDict({
        "arrays": ArrayRecord({k: Array(np.asarray(v, dtype=np.float32))
                               for k, v in arrays.items()}),
        "metrics": MetricRecord(metrics or {"num-examples": 10.0, "train-loss": 1.0}),
        "status": ConfigRecord({"scene": scene, "status": status})})


def test_valid_reply_passes():
    decoded = reply_update(_content(EXPECTED), EXPECTED, weighted=True)
    assert decoded.keys() == EXPECTED.keys()


@pytest.mark.parametrize(("arrays", "metrics", "needle"), [
    ({"encoder.w": np.zeros((2, 3))}, None, "missing ['encoder.b']"),
    (EXPECTED | {"head.x": np.zeros(2)}, None, "unexpected ['head.x']"),
    ({"encoder.w": np.zeros((3, 2)), "encoder.b": np.zeros(3)}, None, "shape (3, 2)"),
    ({"encoder.w": np.full((2, 3), np.nan), "encoder.b": np.zeros(3)}, None, "non-finite"),
    (EXPECTED, {"train-loss": 1.0}, "'num-examples' is None"),
])
def test_bad_replies_are_named(arrays, metrics, needle):
    with pytest.raises(RejectedReply, match=re.escape(needle)):
        reply_update(_content(arrays, metrics), EXPECTED, weighted=True)


def _reply(content, node):
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                        reply_to_message_id="i", group_id="1", created_at=0.0, ttl=60.0,
                        message_type="train")
    return Message(content=content, metadata=metadata)


def test_aggregation_with_server_momentum_and_rejections():
    strategy = SceneStrategy(3, server_learning_rate=0.5, server_momentum=0.9)
    strategy.current = {k: v.copy() for k, v in EXPECTED.items()}
    good = [_content({k: np.full(v.shape, x) for k, v in EXPECTED.items()},
                     {"num-examples": n, "train-loss": 1.0}, scene=f"s{x}")
            for x, n in ((1.0, 10.0), (4.0, 30.0))]
    bad = _content({"encoder.w": np.zeros((2, 3))}, scene="broken")
    spent = _content({}, {"budget-exhausted": 1.0}, status="budget-exhausted", scene="spent")
    replies = [_reply(c, i) for i, c in enumerate(good + [bad, spent], start=1)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    mean = (1.0 * 10 + 4.0 * 30) / 40  # weighted by num-examples
    np.testing.assert_allclose(arrays["encoder.w"].numpy(), 0.5 * mean)
    assert metrics["scenes-trained"] == 2
    assert [f["scene"] for f in strategy.failures] == ["broken"]
    assert list(strategy.exhausted.values()) == ["spent"]
    # Second round: momentum carries the first delta.
    strategy.current = {k: arrays[k].numpy() for k in arrays}
    arrays2, _ = strategy.aggregate_train(2, [_reply(c, i) for i, c in enumerate(good, 1)])
    delta = mean - 0.5 * mean
    np.testing.assert_allclose(arrays2["encoder.w"].numpy(),
                               0.5 * mean + 0.5 * (0.9 * mean + delta), rtol=1e-6)


def test_unweighted_when_dataset_sizes_are_not_sent():
    strategy = SceneStrategy(2, weighted=False)
    strategy.current = {k: v.copy() for k, v in EXPECTED.items()}
    replies = [_reply(_content({k: np.full(v.shape, x) for k, v in EXPECTED.items()},
                               {"train-loss": 1.0}), i)
               for i, x in ((1, 1.0), (2, 3.0))]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["encoder.b"].numpy(), 2.0)


def test_an_oversized_finite_update_is_left_out_with_its_reason():
    strategy = SceneStrategy(4, weighted=False, max_update_ratio=10.0)
    strategy.current = {k: v.copy() for k, v in EXPECTED.items()}
    honest = [_content({k: np.full(v.shape, x) for k, v in EXPECTED.items()},
                       {"train-loss": 1.0}, scene=f"s{i}")
              for i, x in enumerate((0.9, 1.0, 1.1))]
    hostile = _content({k: np.full(v.shape, 1e30) for k, v in EXPECTED.items()},
                       {"train-loss": 1.0}, scene="hostile")
    _with_popularity(honest[0], [1], [5.0])
    _with_popularity(hostile, [1, 2], [9.0, 9.0])
    arrays, metrics = strategy.aggregate_train(
        1, [_reply(c, i) for i, c in enumerate(honest + [hostile], start=1)])
    np.testing.assert_allclose(arrays["encoder.w"].numpy(), 1.0, rtol=1e-6)  # honest mean
    assert metrics["scenes-trained"] == 3
    assert sorted(strategy.popularity) == ["s0"]  # a reply left out is not pooled either
    [failure] = strategy.failures
    assert failure["scene"] == "hostile" and "update norm" in failure["reason"]
    assert "federation.max_update_ratio 10" in failure["reason"]
    # The next round judges by this round's accepted updates too: two replies suffice.
    strategy.current = {k: arrays[k].numpy() for k in arrays}
    strategy.failures.clear()
    again = [_reply(_content({k: v + d for k, v in strategy.current.items()},
                             {"train-loss": 1.0}, scene=s), i)
             for i, (s, d) in enumerate((("s0", 0.1), ("hostile", 1e20)), start=1)]
    strategy.aggregate_train(2, again)
    assert [f["scene"] for f in strategy.failures] == ["hostile"]


def test_a_large_partners_update_is_not_oversized_while_small_beside_the_parameters():
    """Without the floor, the median of three small partners' updates rejects a partner
    whose update is 100 times theirs; with it, that update (1% of the parameters' norm) is
    averaged in, while a 1e30 one still is not."""
    # Nine coordinates of 10: the parameters' norm is 30, the large update's 0.3.
    current = {k: np.full(v.shape, 10.0, dtype=np.float32) for k, v in EXPECTED.items()}
    steps = (0.001, 0.001, 0.001, 0.1)  # per coordinate: the last is 100x the others
    for floor, left_out in ((0.0, ["large"]), (0.1, [])):
        strategy = SceneStrategy(4, weighted=False, max_update_ratio=10.0, update_floor=floor)
        strategy.current = {k: v.copy() for k, v in current.items()}
        contents = [_content({k: v + d for k, v in current.items()}, {"train-loss": 1.0},
                             scene="large" if d == 0.1 else f"s{i}")
                    for i, d in enumerate(steps)]
        strategy.aggregate_train(1, [_reply(c, i) for i, c in enumerate(contents, start=1)])
        assert [f["scene"] for f in strategy.failures] == left_out, floor
    strategy = SceneStrategy(4, weighted=False, max_update_ratio=10.0, update_floor=0.1)
    strategy.current = {k: v.copy() for k, v in current.items()}
    contents[3] = _content({k: np.full(v.shape, 1e30) for k, v in current.items()},
                           {"train-loss": 1.0}, scene="hostile")
    strategy.aggregate_train(1, [_reply(c, i) for i, c in enumerate(contents, start=1)])
    assert [f["scene"] for f in strategy.failures] == ["hostile"]
    assert "federation.update_floor 0.1" in strategy.failures[0]["reason"]


def test_no_bound_without_enough_updates_to_judge_or_when_turned_off():
    for ratio, replies in ((10.0, 2), (0.0, 4)):
        strategy = SceneStrategy(replies, weighted=False, max_update_ratio=ratio)
        strategy.current = {k: v.copy() for k, v in EXPECTED.items()}
        sizes = (1.0, 1e6, 1.0, 1.0)[:replies]
        contents = [_content({k: np.full(v.shape, x) for k, v in EXPECTED.items()},
                             {"train-loss": 1.0}, scene=f"s{i}") for i, x in enumerate(sizes)]
        _, metrics = strategy.aggregate_train(1, [_reply(c, i) for i, c in
                                                  enumerate(contents, start=1)])
        assert metrics["scenes-trained"] == replies and not strategy.failures


class _Grid:
    """Nodes connected over time: `schedule[i]` holds the node ids connected at tick i."""

    def __init__(self, schedule):
        self.schedule, self.tick = schedule, 0

    def get_node_ids(self):
        return self.schedule[min(self.tick, len(self.schedule) - 1)]

    def clock(self):
        return float(self.tick)

    def sleep(self, _):
        self.tick += 1


def _addressed(strategy):
    """The strategy, its messages replaced by the node ids they go to (a Message needs a
    running Flower run)."""
    strategy._construct_messages = lambda record, nodes, kind: list(nodes)
    return strategy


def _round_config():
    return ArrayRecord({k: Array(v) for k, v in EXPECTED.items()}), ConfigRecord({})


def _trained(values, scenes):
    return [_reply(_content({k: np.full(v.shape, x) for k, v in EXPECTED.items()},
                            {"train-loss": 1.0}, scene=s), node)
            for (node, s), x in zip(scenes.items(), values, strict=True)]


def test_a_round_waits_for_absent_partners_only_so_long_then_names_them():
    grid = _Grid([[1, 2, 3]] + [[1, 2]] * 100)
    strategy = _addressed(SceneStrategy(3, weighted=False, quorum=2, partner_wait_s=30.0,
                                        clock=grid.clock, sleep=grid.sleep))
    arrays, config = _round_config()
    assert len(list(strategy.configure_train(1, arrays, config, grid))) == 3
    strategy.aggregate_train(1, _trained((1.0, 2.0, 3.0), {1: "a", 2: "b", 3: "c"}))
    # Partner c goes away: round 2 waits 30 ticks for it, then goes on with a and b.
    grid.tick = 1
    assert strategy.configure_train(2, arrays, config, grid) == [1, 2]
    assert grid.tick == 1 + 30
    [absence] = strategy.absences
    assert absence["round"] == 2 and absence["absent"] == ["c"]
    assert "federation.partner_wait_s" in absence["reason"]
    updated, metrics = strategy.aggregate_train(2, _trained((1.0, 3.0), {1: "a", 2: "b"}))
    assert metrics["scenes-trained"] == 2 and not strategy.below_quorum
    np.testing.assert_allclose(updated["encoder.w"].numpy(), 2.0)


def test_a_partner_that_never_connected_is_counted_and_the_quorum_holds_a_round():
    grid = _Grid([[1]] * 100)
    strategy = _addressed(SceneStrategy(3, quorum=2, partner_wait_s=5.0, clock=grid.clock,
                                        sleep=grid.sleep))
    arrays, config = _round_config()
    assert list(strategy.configure_train(1, arrays, config, grid)) == []
    assert strategy.aggregate_train(1, []) == (None, None)  # Flower calls it all the same
    assert strategy.absences[0]["absent"] == ["2 partner(s) not seen yet"]
    [held] = strategy.below_quorum  # recorded once
    assert held["round"] == 1 and held["partners"] == 1 and held["quorum"] == 2
    assert "shared parameters stay as they are" in held["reason"]


def test_fewer_accepted_replies_than_the_quorum_leave_the_parameters_unchanged():
    grid = _Grid([[1, 2, 3]])
    strategy = _addressed(SceneStrategy(3, weighted=False, quorum=2))
    arrays, config = _round_config()
    list(strategy.configure_train(1, arrays, config, grid))
    broken = _reply(_content({"encoder.w": np.zeros((2, 3))}, scene="b"), 2)
    updated, metrics = strategy.aggregate_train(
        1, [*_trained((5.0,), {1: "a"}), broken])  # c never replies (timed out)
    assert updated is None and metrics is None and strategy.trained == []
    assert strategy.below_quorum[0]["partners"] == 1
    [absence] = strategy.absences
    assert absence["absent"] == ["node 3"] and "no reply" in absence["reason"]


def test_a_quorum_above_the_partners_is_refused():
    with pytest.raises(ConfigError, match="federation.quorum is 4 but the campaign has 3"):
        SceneStrategy(3, quorum=4)


def test_a_scene_too_small_to_train_under_dp_is_not_a_failure_nor_asked_again():
    grid = _Grid([[1, 2, 3]] + [[1, 2]] * 100)
    strategy = _addressed(SceneStrategy(3, weighted=False, quorum=3, partner_wait_s=30.0,
                                        clock=grid.clock, sleep=grid.sleep))
    arrays, config = _round_config()
    list(strategy.configure_train(1, arrays, config, grid))
    small = _reply(_content({}, {}, status="too-few-units", scene="tiny"), 3)
    updated, metrics = strategy.aggregate_train(1, [*_trained((1.0, 3.0), {1: "a", 2: "b"}),
                                                    small])
    assert metrics["scenes-trained"] == 2 and not strategy.failures
    assert not strategy.below_quorum  # the quorum counts the scenes that can train
    assert strategy.too_few == {3: "tiny"}
    grid.tick = 1  # the small scene's partner has left: round 2 does not wait for it
    assert strategy.configure_train(2, arrays, config, grid) == [1, 2]
    assert grid.tick == 1


def _with_popularity(content, keys, counts):
    content["popularity"] = ArrayRecord({"keys": Array(np.asarray(keys, dtype=np.int64)),
                                         "counts": Array(np.asarray(counts, dtype=np.float64))})
    return content


def test_released_popularity_is_pooled_by_item_and_sent_to_the_scenes_without_one():
    grid = _Grid([[1, 2, 3, 4]])
    strategy = SceneStrategy(4, weighted=False)
    strategy._construct_messages = lambda record, nodes, kind: [(n, record) for n in nodes]
    arrays, config = _round_config()
    first = strategy.configure_train(1, arrays, config, grid)
    assert not any("pooled-popularity" in r.array_records for _, r in first)  # none yet
    replies = _trained((1.0, 2.0, 3.0), {1: "a", 2: "b", 3: "c"})
    _with_popularity(replies[0].content, [7, 9], [10.0, 1.0])
    _with_popularity(replies[1].content, [9, 11], [2.0, 5.0])
    _with_popularity(replies[2].content, [7, 7], [1.0, 1.0])  # a key twice: rejected
    small = _reply(_content({}, {}, status="too-few-units", scene="tiny"), 4)
    strategy.aggregate_train(1, [*replies, small])
    assert [f["scene"] for f in strategy.failures] == ["c"]
    assert "repeat" in strategy.failures[0]["reason"]
    # The scenes that sent none (c, rejected, and the one too small to train) get the pool
    # with their evaluation: a's and b's counts summed by item, nothing of c's. a and b,
    # which hold their own, are not sent the others'.
    sent = dict(strategy.configure_evaluate(1, arrays, config, grid))
    assert sorted(sent) == [1, 2, 3, 4]
    assert not any("pooled-popularity" in sent[n].array_records for n in (1, 2))
    for node in (3, 4):
        pooled = sent[node]["pooled-popularity"]
        np.testing.assert_array_equal(pooled["keys"].numpy(), [7, 9, 11])
        np.testing.assert_allclose(pooled["counts"].numpy(), [10.0, 3.0, 5.0])


def test_a_round_below_quorum_pools_nothing():
    strategy = SceneStrategy(3, weighted=False, quorum=3)
    strategy.current = {k: v.copy() for k, v in EXPECTED.items()}
    replies = _trained((1.0, 2.0), {1: "a", 2: "b"})
    _with_popularity(replies[0].content, [7], [10.0])
    assert strategy.aggregate_train(1, replies) == (None, None)
    assert strategy.popularity == {}


@pytest.mark.parametrize(("keys", "counts", "needle"), [
    (np.array([1, 2], dtype=np.int32), [1.0, 2.0], "int64"),
    ([1, 2], [1.0], "one length"),
    ([1, 2], [1.0, np.inf], "not finite"),
    ([1, 2], [1.0, -1e12], "exceeds 1e\\+09"),
])
def test_a_bad_popularity_record_is_named(keys, counts, needle):
    content = _content(EXPECTED)
    content["popularity"] = ArrayRecord({"keys": Array(np.asarray(keys)),
                                         "counts": Array(np.asarray(counts, dtype=float))})
    with pytest.raises(RejectedReply, match=needle):
        reply_popularity(content)
    assert reply_popularity(_content(EXPECTED)) is None  # none sent: nothing to pool
