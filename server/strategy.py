"""Scene-aware FedAvg: aggregates only the shared group, with a server-side update.

Differences from Flower's FedAvg, which it extends:
- a round waits at most `partner_wait_s` for all N nodes, then goes on with those connected
  if they are at least `quorum` (the others are named as absent), and never asks a scene
  that reported its budget spent, or too few shoppers to train under DP, to train again;
- a round whose accepted replies are fewer than `quorum` leaves the shared parameters as
  they are;
- each reply is validated (keys, shapes, finiteness) and a bad one is logged and left out
  instead of failing the round; failures are recorded with round, node and scene;
- the average is applied as a server step on the delta, `w += lr * v` with
  `v = momentum * v + (mean - w)` (plain FedAvg at lr 1, momentum 0; Reptile-style
  meta-update otherwise);
- the scenes' released popularity counts, sent beside the parameters of accepted replies,
  are summed by item once a round and sent to the scenes that sent none (`client.pooled`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common import log
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedscene.common.errors import ConfigError
from fedscene.common.popularity import PooledCounts
from fedscene.common.protocol import (
    ARRAYS,
    BUDGET_EXHAUSTED,
    CONFIG_RECORD,
    COUNTS,
    ITEM_KEYS,
    LEDGER_HEAD,
    METRICS,
    NUM_EXAMPLES,
    POOLED,
    POPULARITY,
    SERVER_ROUND,
    STATUS,
    TOO_FEW_UNITS,
)

ReplyObserver = Callable[[int, str, RecordDict], None]

# Reply statuses of scenes that no longer train, and what they mean.
RETIRING = {BUDGET_EXHAUSTED: "has spent its privacy budget",
            TOO_FEW_UNITS: "has too few shoppers to train under DP (privacy.min_units) and "
                           "keeps its start"}


# What one scene's popularity record may hold: no catalogue of a million items, no count of
# a billion purchases (so that a sum over scenes stays finite and no partner can drown the
# others' counts by orders of magnitude; within these bounds a partner's counts are taken
# as released).
MAX_POOLED_ITEMS = 1_000_000
MAX_POOLED_COUNT = 1e9


class RejectedReply(ValueError):
    """A training reply that cannot be averaged in; the message says why."""


def reply_update(content: RecordDict, expected: dict[str, np.ndarray], weighted: bool
                 ) -> dict[str, np.ndarray]:
    """The reply's shared parameters, decoded once; `RejectedReply` when they cannot be
    averaged in (names, shapes, non-finite values, a missing or bad example count)."""
    if ARRAYS not in content.array_records:
        raise RejectedReply("no parameter record in the reply")
    arrays = content[ARRAYS]
    got = set(arrays.keys())
    missing, extra = sorted(set(expected) - got), sorted(got - set(expected))
    if missing or extra:
        raise RejectedReply(f"parameter names differ: missing {missing}, unexpected {extra}")
    decoded = {name: arrays[name].numpy() for name in expected}
    for name, reference in expected.items():
        value = decoded[name]
        if value.shape != reference.shape:
            raise RejectedReply(f"parameter {name!r} has shape {value.shape}, expected "
                                f"{reference.shape}")
        if not np.isfinite(value).all():
            raise RejectedReply(f"parameter {name!r} has non-finite values")
    if METRICS not in content.metric_records:
        raise RejectedReply("no metric record in the reply")
    if weighted:
        count = content[METRICS].get(NUM_EXAMPLES)
        if not isinstance(count, int | float) or not count > 0:
            raise RejectedReply(f"'{NUM_EXAMPLES}' is {count!r}; it must be a positive number")
    return decoded


def reply_popularity(content: RecordDict) -> tuple[np.ndarray, np.ndarray] | None:
    """The scene's released popularity counts by hashed item key, if the reply carries
    them; `RejectedReply` when they cannot be pooled (shapes, types, repeated keys,
    non-finite counts)."""
    if POPULARITY not in content.array_records:
        return None
    record = content[POPULARITY]
    if set(record.keys()) != {ITEM_KEYS, COUNTS}:
        raise RejectedReply(f"the popularity record holds {sorted(record.keys())}, expected "
                            f"{sorted([ITEM_KEYS, COUNTS])}")
    keys, counts = record[ITEM_KEYS].numpy(), record[COUNTS].numpy()
    if keys.ndim != 1 or keys.dtype != np.int64 or counts.shape != keys.shape:
        raise RejectedReply(f"popularity keys {keys.dtype}{keys.shape} and counts "
                            f"{counts.dtype}{counts.shape} must be int64 and of one length")
    if len(keys) > MAX_POOLED_ITEMS:
        raise RejectedReply(f"popularity counts {len(keys)} items, more than "
                            f"{MAX_POOLED_ITEMS}")
    if len(np.unique(keys)) != len(keys) or not np.isfinite(counts).all():
        raise RejectedReply("popularity keys repeat or counts are not finite")
    if np.abs(counts).max(initial=0.0) > MAX_POOLED_COUNT:
        raise RejectedReply(f"a popularity count exceeds {MAX_POOLED_COUNT:g} in size")
    return keys, counts.astype(np.float64)


class SceneStrategy(FedAvg):
    """FedAvg over the shared parameter group of N scene nodes."""

    def __init__(self, num_nodes: int, *, server_learning_rate: float = 1.0,
                 server_momentum: float = 0.0, weighted: bool = True,
                 max_update_ratio: float = 0.0, update_floor: float = 0.0, quorum: int = 1,
                 partner_wait_s: float = 600.0, observer: ReplyObserver | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if quorum > num_nodes:
            raise ConfigError(f"federation.quorum is {quorum} but the campaign has "
                              f"{num_nodes} partners; lower it to at most {num_nodes}")
        super().__init__(min_train_nodes=num_nodes, min_evaluate_nodes=num_nodes,
                         min_available_nodes=num_nodes)
        self.num_nodes = num_nodes
        self.quorum = quorum
        self.partner_wait_s = partner_wait_s
        self.clock, self.sleep = clock, sleep
        self.server_learning_rate = server_learning_rate
        self.server_momentum = server_momentum
        self.weighted = weighted
        self.max_update_ratio = max_update_ratio
        self.update_floor = update_floor
        self.previous_norms: list[float] = []  # the last round's accepted update norms
        self.observer = observer
        self.current: dict[str, np.ndarray] = {}
        self.velocity: dict[str, np.ndarray] = {}
        # node -> (scene, status) of the scenes that no longer train: budget spent, or
        # too few units to train under DP
        self.retired: dict[int, tuple[str, str]] = {}
        self.scene_of_node: dict[int, str] = {}  # learnt from replies, to name failures
        self.failures: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.trained: list[dict[str, Any]] = []
        self.round_started: dict[int, float] = {}
        self.round_seconds: dict[int, float] = {}  # train + evaluate, as the server waited
        self.ledger_heads: list[dict[str, Any]] = []  # per reply: the scene's ledger head
        self.absences: list[dict[str, Any]] = []  # round, phase, absent partners, why
        self.below_quorum: list[dict[str, Any]] = []  # rounds that changed nothing, why
        self.sent: dict[str, list[int]] = {}  # phase -> the nodes asked in this round
        # scene -> its released popularity (hashed item keys, counts), the latest sent, and
        # their sum by item (kept with it: configure_train and configure_evaluate both send it)
        self.popularity: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.pooled = PooledCounts.of([])

    @property
    def exhausted(self) -> dict[int, str]:
        """Nodes whose scene has spent its budget, with the scene."""
        return self._retired_as(BUDGET_EXHAUSTED)

    @property
    def too_few(self) -> dict[int, str]:
        """Nodes whose scene has too few units to train under DP, with the scene."""
        return self._retired_as(TOO_FEW_UNITS)

    def _retired_as(self, status: str) -> dict[int, str]:
        return {n: scene for n, (scene, why) in self.retired.items() if why == status}

    def _required(self) -> int:
        """Replies a round needs: the quorum, or every partner still in budget if fewer."""
        return min(self.quorum, self.num_nodes - len(self.retired))

    def _connected(self, grid: Grid, server_round: int, wait_s: float) -> list[int]:
        """The connected nodes once every partner that can still train is (those out of
        budget or too small may have left for good), or once `wait_s` has passed."""
        retired = self.retired.keys()
        wanted = self.num_nodes - len(retired)
        deadline, nodes = self.clock() + wait_s, sorted(grid.get_node_ids())
        if len(set(nodes) - retired) < wanted and wait_s > 0:
            log(INFO, "round %s: %d of %d partners connected; waiting up to %.0f s "
                      "(federation.partner_wait_s)", server_round, len(nodes), self.num_nodes,
                wait_s)
        while len(set(nodes) - retired) < wanted and self.clock() < deadline:
            self.sleep(1.0)
            nodes = sorted(grid.get_node_ids())
        return nodes

    def _note_absent(self, server_round: int, phase: str, present: Sequence[int],
                     reason: str, among: Sequence[int] | None = None) -> None:
        """Record the partners (by scene where a reply has named it) not in `present`: of
        all N, or only of the nodes `among` (those sent a message)."""
        if among is not None:
            absent = [self.scene_of_node.get(n, f"node {n}") for n in among
                      if n not in present]
        else:
            missing = [scene for node, scene in sorted(self.scene_of_node.items())
                       if node not in present]
            unseen = self.num_nodes - len(set(present)) - len(missing)
            absent = missing + ([f"{unseen} partner(s) not seen yet"] if unseen > 0 else [])
        if absent:
            log(WARNING, "round %s %s: absent: %s (%s)", server_round, phase,
                ", ".join(absent), reason)
            self.absences.append({"round": server_round, "phase": phase, "absent": absent,
                                  "reason": reason})

    def _short_of_quorum(self, server_round: int, phase: str, count: int, what: str) -> bool:
        """True (and recorded) when `count` partners are fewer than the round needs."""
        required = self._required()
        if count >= required:
            return False
        reason = (f"{count} {what}, fewer than the quorum of {required} "
                  f"(federation.quorum): the shared parameters stay as they are")
        log(WARNING, "round %s %s: %s", server_round, phase, reason)
        self.below_quorum.append({"round": server_round, "phase": phase, "partners": count,
                                  "quorum": required, "reason": reason})
        return True

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The connected nodes, waited for up to `partner_wait_s`, but those whose budget
        is spent get the shared parameters, if they make the quorum."""
        self.round_started[server_round] = time.time()
        self.current = {name: arrays[name].numpy() for name in arrays}
        self.sent["train"] = []
        connected = self._connected(grid, server_round, self.partner_wait_s)
        self._note_absent(server_round, "train", connected,
                          f"not connected within {self.partner_wait_s:g} s "
                          f"(federation.partner_wait_s)")
        nodes = [n for n in connected if n not in self.retired]
        if self._required() == 0:
            log(INFO, "configure_train: no scene left to train (budget spent, or too few "
                      "shoppers to train under DP)")
            return []
        if self._short_of_quorum(server_round, "train", len(nodes), "partners connected"):
            return []
        config[SERVER_ROUND] = server_round
        self.sent["train"] = nodes
        return self._messages(arrays, config, nodes, MessageType.TRAIN)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Every node connected evaluates, including those that no longer train (the round
        has already waited for partners in training)."""
        config[SERVER_ROUND] = server_round
        nodes = self._connected(grid, server_round, 0.0)
        self._note_absent(server_round, "evaluate", nodes, "not connected")
        self.sent["evaluate"] = nodes
        return self._messages(arrays, config, nodes, MessageType.EVALUATE)

    def _messages(self, arrays: ArrayRecord, config: ConfigRecord, nodes: list[int],
                  kind: str) -> list[Message]:
        """Every node gets the shared parameters and the config; once scenes have sent
        their released popularity, the nodes of the other scenes (those with no prior of
        their own, or not heard from yet) also get the pool, and only they."""
        plain = RecordDict({ARRAYS: arrays, CONFIG_RECORD: config})
        contributors = {n for n, scene in self.scene_of_node.items()
                        if scene in self.popularity}
        receivers = [n for n in nodes if n not in contributors]
        if not self.popularity or not receivers:
            return list(self._construct_messages(plain, nodes, kind))
        with_pool = RecordDict({ARRAYS: arrays, CONFIG_RECORD: config,
                                POOLED: ArrayRecord({ITEM_KEYS: Array(self.pooled.keys),
                                                     COUNTS: Array(self.pooled.counts)})})
        return [*self._construct_messages(plain, [n for n in nodes if n in contributors],
                                          kind),
                *self._construct_messages(with_pool, receivers, kind)]

    def _scene(self, message: Message) -> str:
        node = message.metadata.src_node_id
        scene = _scene_of(message)
        if scene is not None:
            self.scene_of_node[node] = scene
        return self.scene_of_node.get(node, f"node {node}")

    def _bounded(self, server_round: int, accepted: list[tuple[Message, dict[str, np.ndarray]]]
                 ) -> list[tuple[Message, dict[str, np.ndarray]]]:
        """The (reply, parameters) whose update (the parameters less the current shared
        ones) has an L2 norm at most `max_update_ratio` x the median of this round's and the
        last round's accepted norms, or at most `update_floor` x the current parameters'
        norm; the others are left out as failures with their reason. Needs at least three
        norms to judge by (0 turns the check off).

        The floor is for federations of unequal partners: a partner with a hundred times
        the others' shoppers takes that many more steps, and its honest update is as many
        times their median (measured: the United Kingdom's against small countries', 47 to
        225 times, without DP), yet still a few percent of the parameters' norm."""
        if self.max_update_ratio <= 0:
            return accepted
        norms = [float(np.sqrt(sum(
            float(np.sum((arrays[name].astype(np.float64) - value) ** 2))
            for name, value in self.current.items()))) for _, arrays in accepted]
        pool = norms + self.previous_norms
        if len(pool) < 3:
            self.previous_norms = norms
            return accepted
        reference = float(np.median(pool))
        floor = self.update_floor * float(np.sqrt(sum(
            float(np.sum(value.astype(np.float64) ** 2)) for value in self.current.values())))
        kept, kept_norms = [], []
        for reply, norm in zip(accepted, norms, strict=True):
            message = reply[0]
            if norm > max(self.max_update_ratio * reference, floor, 1e-12):
                self._fail(server_round, "train", message,
                           f"update norm {norm:.3g} is {norm / max(reference, 1e-12):.3g}x the "
                           f"median {reference:.3g} (federation.max_update_ratio "
                           f"{self.max_update_ratio:g}) and above federation.update_floor "
                           f"{self.update_floor:g} x the parameters' norm ({floor:.3g}): left "
                           f"out of the average")
                continue
            kept.append(reply)
            kept_norms.append(norm)
        self.previous_norms = kept_norms
        return kept

    def _record_head(self, server_round: int, phase: str, scene: str, content: RecordDict
                     ) -> None:
        """Keep the hash of the scene's latest ledger entry its reply carried: the
        coordinator's record of each partner's ledger (`fedscene audit --coordinator`)."""
        if STATUS in content.config_records and LEDGER_HEAD in content[STATUS]:
            self.ledger_heads.append({"round": server_round, "phase": phase, "scene": scene,
                                      "head": str(content[STATUS][LEDGER_HEAD])})

    def _errored(self, server_round: int, phase: str, message: Message) -> None:
        """An error reply is a failure, except the SuperLink's "node unavailable" (the
        partner went away during the round), which `_no_reply` names as an absence."""
        if message.error.code != ErrorCode.NODE_UNAVAILABLE:
            self._fail(server_round, phase, message, message.error.reason)

    def _no_reply(self, server_round: int, phase: str, replies: list[Message]) -> None:
        """Name the partners sent a message this round whose reply did not come."""
        replied = [m.metadata.src_node_id for m in replies
                   if not (m.has_error() and m.error.code == ErrorCode.NODE_UNAVAILABLE)]
        self._note_absent(server_round, phase, replied,
                          "no reply: went offline during the round, or past "
                          "federation.round_timeout_s", among=self.sent.get(phase, []))

    def _fail(self, server_round: int, phase: str, message: Message, reason: str) -> None:
        node = message.metadata.src_node_id
        scene = self._scene(message)
        log(WARNING, "round %s %s: reply of %s rejected: %s", server_round, phase, scene, reason)
        self.failures.append({"round": server_round, "phase": phase, "node": node,
                              "scene": scene, "reason": reason})

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate replies, average the valid ones, and take the server step."""
        if self.sent.get("train") == []:  # nothing was asked: held, or no scene left
            return None, None
        replies = list(replies)
        valid: list[tuple[Message, dict[str, np.ndarray]]] = []
        popularity_of: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for message in replies:
            if message.has_error():
                self._errored(server_round, "train", message)
                continue
            content = message.content
            scene = self._scene(message)
            self._record_head(server_round, "train", scene, content)
            status = content[STATUS].get(STATUS) if STATUS in content.config_records else None
            if status in RETIRING:
                self.retired[message.metadata.src_node_id] = (scene, str(status))
                log(INFO, "round %s: %s %s; it will not be asked to train again",
                    server_round, scene, RETIRING[status])
                continue
            try:
                arrays = reply_update(content, self.current, self.weighted)
                popularity = reply_popularity(content)
            except RejectedReply as problem:
                self._fail(server_round, "train", message, str(problem))
                continue
            if self.observer:
                self.observer(server_round, scene, content)
            valid.append((message, arrays))
            if popularity is not None:
                popularity_of[message.metadata.src_node_id] = popularity
        self._no_reply(server_round, "train", replies)
        kept = self._bounded(server_round, valid)
        if self._short_of_quorum(server_round, "train", len(kept), "accepted replies") or (
                not kept):
            return None, None
        for message, _ in kept:
            node = message.metadata.src_node_id
            self.trained.append({"round": server_round, "scene": self._scene(message)}
                                | dict(message.content[METRICS]))
            if node in popularity_of:  # pooled as averaged: only accepted replies
                self.popularity[self._scene(message)] = popularity_of[node]
        if popularity_of:
            self.pooled = PooledCounts.of(list(self.popularity.values()))
        accepted = [message.content for message, _ in kept]
        weights = np.array([float(c[METRICS][NUM_EXAMPLES]) if self.weighted else 1.0
                            for c in accepted])
        weights /= weights.sum()
        updated = {}
        for name, current in self.current.items():
            mean = sum(w * arrays[name] for w, (_, arrays) in zip(weights, kept, strict=True))
            velocity = self.server_momentum * self.velocity.get(name, 0.0) + (mean - current)
            self.velocity[name] = velocity
            updated[name] = (current + self.server_learning_rate * velocity).astype(
                current.dtype)
        metrics = MetricRecord({"scenes-trained": len(accepted)})
        losses = [float(c[METRICS]["train-loss"]) for c in accepted
                  if "train-loss" in c[METRICS]]  # only scenes that release it (ledgered)
        if losses:
            metrics["train-loss"] = float(np.mean(losses))
        return ArrayRecord({k: Array(v) for k, v in updated.items()}), metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Keep what each scene released (by default nothing: evaluation results stay in
        the scene's state directory); return their unweighted mean (each scene counts once)."""
        replies = list(replies)
        self._no_reply(server_round, "evaluate", replies)
        rows = []
        for message in replies:
            if message.has_error():
                self._errored(server_round, "evaluate", message)
                continue
            scene = self._scene(message)
            self._record_head(server_round, "evaluate", scene, message.content)
            rows.append({"round": server_round, "scene": scene}
                        | dict(message.content[METRICS]))
        self.evaluations.extend(rows)
        if server_round in self.round_started:
            self.round_seconds[server_round] = time.time() - self.round_started[server_round]
        if not rows:
            return None
        keys = [k for k in rows[0] if k not in ("round", "scene")]
        return MetricRecord({k: float(np.mean([r[k] for r in rows])) for k in keys})


def _scene_of(message: Message) -> str | None:
    if message.has_error() or STATUS not in message.content.config_records:
        return None
    return str(message.content[STATUS].get("scene"))
