"""Run one federated algorithm over a Grid: initial encoder, rounds, checkpoints, outcome."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from fedscene.common.algorithms import algorithm as algorithm_named
from fedscene.common.algorithms import federated_names, shared_prefixes
from fedscene.common.config import ExperimentConfig
from fedscene.common.errors import ConfigError
from fedscene.common.layout import ArmLayout
from fedscene.common.model import build_model, split_state
from fedscene.common.protocol import ALGORITHM, CONFIG_JSON, RUN_ID, SEED, STATE_ROOT
from fedscene.server.strategy import ReplyObserver, SceneStrategy


@dataclass
class FederationOutcome:
    """What the server saw: per-round per-scene metrics, failures, spent budgets."""

    algorithm: str
    seed: int
    run_id: str
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    trained: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    exhausted: list[str] = field(default_factory=list)
    too_few_units: list[str] = field(default_factory=list)  # kept their start (min_units)
    round_seconds: dict[int, float] = field(default_factory=dict)
    ledger_heads: list[dict[str, Any]] = field(default_factory=list)  # round, phase, scene, head
    absences: list[dict[str, Any]] = field(default_factory=list)  # round, phase, absent, reason
    below_quorum: list[dict[str, Any]] = field(default_factory=list)  # rounds left unchanged
    # scenes whose released popularity counts were pooled (and sent to the others)
    pooled_popularity: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> FederationOutcome:
        """The outcome a federation wrote (`ArmLayout.federation_json`)."""
        raw = json.loads(path.read_text())
        raw["round_seconds"] = {int(k): v for k, v in raw.get("round_seconds", {}).items()}
        return cls(**raw)


def initial_shared(config: ExperimentConfig, algorithm: str, seed: int
                   ) -> dict[str, torch.Tensor]:
    """The shared group of a seeded fresh model (clients seed their models identically)."""
    torch.manual_seed(seed)
    model = build_model(config, 1, algorithm)
    return split_state(model.state_dict(),
                       shared_prefixes(algorithm, config.aligned(algorithm)))[0]


def run_federation(grid: Grid, config: ExperimentConfig, *, algorithm: str, num_nodes: int,
                   out_dir: Path, seed: int, run_id: str,
                   observer: ReplyObserver | None = None) -> FederationOutcome:
    """Train `algorithm` for `federation.rounds` rounds; write checkpoints and the outcome
    under `out_dir` (laid out as `ArmLayout`); return the outcome."""
    if not algorithm_named(algorithm).federated:
        raise ConfigError(f"algorithm {algorithm!r} is not federated; use one of "
                          f"{', '.join(federated_names())} ({algorithm} runs without Flower)")
    federation = config.federation
    strategy = SceneStrategy(num_nodes, server_learning_rate=federation.server_learning_rate,
                             server_momentum=federation.server_momentum,
                             weighted=federation.send_num_examples,
                             max_update_ratio=federation.max_update_ratio,
                             update_floor=federation.update_floor,
                             quorum=federation.quorum, partner_wait_s=federation.partner_wait_s,
                             observer=observer)
    layout = ArmLayout(out_dir)
    layout.checkpoint(0).parent.mkdir(parents=True, exist_ok=True)

    def checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        torch.save(arrays.to_torch_state_dict(), layout.checkpoint(server_round))
        return None

    settings = ConfigRecord({CONFIG_JSON: config.to_json(), ALGORITHM: algorithm,
                             RUN_ID: run_id, SEED: seed, STATE_ROOT: str(layout.scenes)})
    strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_shared(config, algorithm, seed)),
                   num_rounds=federation.rounds, timeout=federation.round_timeout_s,
                   train_config=settings, evaluate_config=ConfigRecord(dict(settings)),
                   evaluate_fn=checkpoint)
    outcome = FederationOutcome(algorithm=algorithm, seed=seed, run_id=run_id,
                                evaluations=strategy.evaluations, trained=strategy.trained,
                                failures=strategy.failures,
                                exhausted=sorted(strategy.exhausted.values()),
                                too_few_units=sorted(strategy.too_few.values()),
                                round_seconds=strategy.round_seconds,
                                ledger_heads=strategy.ledger_heads,
                                absences=strategy.absences,
                                below_quorum=strategy.below_quorum,
                                pooled_popularity=sorted(strategy.popularity))
    layout.federation_json.write_text(json.dumps(asdict(outcome), indent=2,
                                                 default=_json_default))
    return outcome


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
