"""The Flower ClientApp: maps a node to its scene and runs `client.task` for each message.

In simulation the node's `partition-id` indexes `data.scenes` and the state directory is
`<state-root>/<scene>`; in deployment the node config gives `scene`, `state-dir` and
optionally `data-path` / `items-path`, so data and state stay on the partner's disk.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedscene.client.state import SceneState
from fedscene.client.task import (
    RoundRequest,
    evaluate_round,
    load_scene_dataset,
    raw_dataset,
    released_metrics,
    train_round,
)
from fedscene.common.config import ExperimentConfig, refuse_reproducible_noise
from fedscene.common.data import resolve_scenes
from fedscene.common.errors import FedsceneError
from fedscene.common.layout import scene_directory
from fedscene.common.ledger import read_ledger
from fedscene.common.popularity import PooledCounts
from fedscene.common.protocol import (
    ALGORITHM,
    ARRAYS,
    CONFIG_JSON,
    CONFIG_RECORD,
    COUNTS,
    ITEM_KEYS,
    LEDGER_HEAD,
    METRICS,
    POOLED,
    POPULARITY,
    RUN_ID,
    SEED,
    SERVER_ROUND,
    STATE_ROOT,
    STATUS,
    TRAINED,
)

app = ClientApp()
PROCESS_STARTED = time.time()  # a deployment may start a process per message: report it
_trainings_in_process = 0  # train messages this process has handled, this one included


@app.lifespan()
def _one_thread(context: Context) -> Iterator[None]:
    """Each message computes with one torch thread: a machine runs several clients (Ray
    actors, SuperNodes), each given a CPU. The previous setting comes back afterwards, so a
    process that also runs the harness (a simulation) keeps its own."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _resolve(message: Message, context: Context) -> tuple[RoundRequest, SceneState]:
    settings = message.content[CONFIG_RECORD]
    config = ExperimentConfig.from_json(str(settings[CONFIG_JSON]))
    node = context.node_config
    if "scene" in node:  # a partner's SuperNode: deployment
        refuse_reproducible_noise(config, "the campaign config")
        scene = str(node["scene"])
    else:
        index = int(node["partition-id"])
        scenes = config.data.scenes or resolve_scenes(raw_dataset(config.data.model_dump_json()),
                                                      config.data)
        if index >= len(scenes):
            raise FedsceneError(f"node with partition-id {index} has no scene: there are "
                                f"{len(scenes)} scenes ({', '.join(scenes)})")
        scene = scenes[index]
    data = config.data
    if "data-path" in node:
        data = data.model_copy(update={"path": str(node["data-path"])})
    if "items-path" in node:
        data = data.model_copy(update={"items_path": str(node["items-path"])})
    config = config.model_copy(update={"data": data})
    if "state-dir" in node:
        directory = Path(str(node["state-dir"]))
    else:
        directory = scene_directory(str(settings[STATE_ROOT]), scene)
    shared = {}
    if ARRAYS in message.content:
        shared = message.content[ARRAYS].to_torch_state_dict()
    pooled = None
    if POOLED in message.content.array_records:
        record = message.content[POOLED]
        pooled = PooledCounts(record[ITEM_KEYS].numpy(), record[COUNTS].numpy())
    request = RoundRequest(config=config, algorithm=str(settings[ALGORITHM]),
                           round=int(settings[SERVER_ROUND]), run_id=str(settings[RUN_ID]),
                           seed=int(settings[SEED]), shared=shared, pooled=pooled)
    return request, SceneState(directory, scene)


def _reply(message: Message, state: SceneState, metrics: dict[str, float], status: str,
           arrays: dict[str, torch.Tensor] | None = None,
           popularity: tuple[np.ndarray, np.ndarray] | None = None) -> Message:
    """The reply: its metrics, the scene, its status and the hash of the scene's latest
    ledger entry (read after everything the message ledgered), which the coordinator
    records so that a ledger rewritten later is caught (`fedscene audit --coordinator`)."""
    record = ConfigRecord({"scene": state.scene, STATUS: status,
                           LEDGER_HEAD: read_ledger(state.ledger_path).head})
    content = RecordDict({METRICS: MetricRecord(metrics), STATUS: record})
    if arrays is not None:
        content[ARRAYS] = ArrayRecord(arrays)
    if popularity is not None:
        keys, counts = popularity
        content[POPULARITY] = ArrayRecord({ITEM_KEYS: Array(keys), COUNTS: Array(counts)})
    return Message(content=content, reply_to=message)


ERROR_LOG = "errors.log"


class SceneFailure(Exception):
    """What a failed message tells the coordinator: that it failed, not why. Exception
    text can carry private facts (a catalogue size in a shape error, a data value, the
    spend), so the reason is written to the scene's own state directory instead."""


def _guarded(phase: str):
    """Run a handler; on failure keep the reason on the partner's side and reply with a
    message that says only which phase failed."""

    def wrap(handler):
        @functools.wraps(handler)
        def run(message: Message, context: Context) -> Message:
            try:
                return handler(message, context)
            except Exception as error:  # every failure, whatever raised it
                _keep_reason(message, context, phase, error)
                raise SceneFailure(f"{phase} failed at the scene; the reason is in its state "
                                   f"directory ({ERROR_LOG})") from None

        return run

    return wrap


def _keep_reason(message: Message, context: Context, phase: str, error: Exception) -> None:
    line = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} round "
            f"{message.content[CONFIG_RECORD].get(SERVER_ROUND, '?')} {phase}: "
            f"{type(error).__name__}: {error}\n")
    try:
        _, state = _resolve(message, context)
        with open(state.directory / ERROR_LOG, "a", encoding="utf-8") as handle:
            handle.write(line)
    except Exception:  # no state directory to be had: the partner's own log gets it
        print(line, end="", file=sys.stderr)


@app.train()
@_guarded("train")
def train(message: Message, context: Context) -> Message:
    """Train the scene for one round; reply with the noised shared parameters and, only
    when the config opts in, metrics ledgered as released without DP."""
    global _trainings_in_process
    arrived = time.time()
    _trainings_in_process += 1
    request, state = _resolve(message, context)
    dataset = load_scene_dataset(request.config, state.scene)
    loaded = time.time()
    outcome = train_round(state, dataset, request)
    if outcome.status != TRAINED:
        return _reply(message, state, {}, outcome.status, {})
    timings = {"process-uptime-s": arrived - PROCESS_STARTED, "load-s": loaded - arrived,
               "train-s": time.time() - loaded,
               "process-trainings": float(_trainings_in_process)}
    metrics = released_metrics(state, request, outcome.metrics | timings, dataset.n_train)
    return _reply(message, state, metrics, outcome.status, outcome.shared, outcome.popularity)


@app.evaluate()
@_guarded("evaluate")
def evaluate(message: Message, context: Context) -> Message:
    """Evaluate the scene with the global shared part and its local head. The results stay
    in the state directory; they are sent only when the config opts in (ledgered)."""
    request, state = _resolve(message, context)
    dataset = load_scene_dataset(request.config, state.scene)
    metrics = released_metrics(state, request, evaluate_round(state, dataset, request))
    return _reply(message, state, metrics, "evaluated")
