"""One scene's round, independent of Flower: restore, train or evaluate, save, report.

What leaves the scene is only what `shared_prefixes(algorithm, aligned)` names, plus the
metrics the caller chooses to send; the head, the ledger and per-user results stay in the
state directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from fedscene.client.budget import (
    PrivacyPlan,
    load_or_create_plan,
    record_training,
    spent_history,
    would_exceed,
)
from fedscene.client.state import SceneState, params_digest
from fedscene.common.accounting import epsilon
from fedscene.common.config import DataConfig, ExperimentConfig, ModelConfig
from fedscene.common.data import RawDataset, SceneDataset, build_scene, load_raw_dataset
from fedscene.common.data.scene import train_negatives
from fedscene.common.errors import FedsceneError
from fedscene.common.evaluation import evaluate_users, model_scorer
from fedscene.common.metrics import METRICS, summarize
from fedscene.common.model import (
    DISC,
    ENCODER,
    HEAD,
    SceneModel,
    build_model,
    shared_prefixes,
    split_state,
)
from fedscene.common.protocol import BUDGET_EXHAUSTED, NUM_EXAMPLES, TRAINED
from fedscene.common.training import (
    Alignment,
    DPSettings,
    Proximal,
    sample_rate_and_steps,
    train_local,
)


@lru_cache(maxsize=2)
def raw_dataset(data_json: str) -> RawDataset:
    """The validated source tables, cached per process."""
    return load_raw_dataset(DataConfig.model_validate_json(data_json))


@lru_cache(maxsize=16)
def _scene(data_json: str, model_json: str, scene: str) -> SceneDataset:
    return build_scene(raw_dataset(data_json), scene, DataConfig.model_validate_json(data_json),
                       ModelConfig.model_validate_json(model_json))


def load_scene_dataset(config: ExperimentConfig, scene: str) -> SceneDataset:
    """The scene's arrays, cached per process (a deployment may start one per message)."""
    return _scene(config.data.model_dump_json(), config.model.model_dump_json(), scene)


@dataclass
class RoundRequest:
    """What the server asked for: the algorithm, the round and the shared parameters."""

    config: ExperimentConfig
    algorithm: str
    round: int
    run_id: str
    seed: int = 0
    shared: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class TrainOutcome:
    status: str  # TRAINED or BUDGET_EXHAUSTED
    shared: dict[str, torch.Tensor]
    metrics: dict[str, float]


def alignment_of(config: ExperimentConfig, algorithm: str, scene: str) -> Alignment | None:
    """The scene's adversarial setting this round, or None without alignment."""
    if not config.aligned(algorithm):
        return None
    return Alignment(config.domain_index(scene), config.alignment.weight,
                     labelled=scene not in config.alignment.unlabelled,
                     anchored_steps=config.alignment.discriminator_steps)


def steps_per_round(config: ExperimentConfig, algorithm: str, n_train: int,
                    unlabelled: bool = False) -> tuple[float, int, int]:
    """(sample rate, head-only steps, joint/encoder steps) of one round. Only fedrep has a
    head-only phase, and not for an unlabelled scene, which has no target to fit a head to."""
    batch = config.training.batch_size
    rate, steps = sample_rate_and_steps(n_train, batch, config.training.local_epochs)
    head_steps = (sample_rate_and_steps(n_train, batch, config.training.head_epochs)[1]
                  if algorithm == "fedrep" and not unlabelled else 0)
    return rate, head_steps, steps


def restore_model(state: SceneState, dataset: SceneDataset, request: RoundRequest
                  ) -> SceneModel:
    """Fresh model (seeded, as the server's), then the scene's local part, then shared."""
    torch.manual_seed(request.seed)
    model = build_model(request.config, dataset.n_items, request.algorithm)
    expected = model.state_dict()
    for source, part in (("state", state.load_local() or {}), ("server", request.shared)):
        for name, value in part.items():
            if name not in expected or expected[name].shape != value.shape:
                shape = tuple(expected[name].shape) if name in expected else "absent"
                raise FedsceneError(
                    f"scene {state.scene}: parameter {name!r} from the {source} has shape "
                    f"{tuple(value.shape)}, the model expects {shape}; the config's model "
                    f"section must match the one the state was trained with")
        model.load_state_dict(part, strict=False)
    return model


def train_round(state: SceneState, dataset: SceneDataset, request: RoundRequest
                ) -> TrainOutcome:
    """Train one round under the scene's budget; save state; return the shared update."""
    config, algorithm = request.config, request.algorithm
    prefixes = shared_prefixes(algorithm, config.aligned(algorithm))
    alignment = alignment_of(config, algorithm, state.scene)
    unlabelled = alignment is not None and not alignment.labelled
    rate, head_steps, steps = steps_per_round(config, algorithm, dataset.n_train, unlabelled)
    total = head_steps + steps
    private = config.privacy.enabled
    history: list[tuple[float, float, int]] = spent_history(state)
    plan, epsilon_after = None, None
    if private:
        plan = load_or_create_plan(state, config.privacy, dataset.n_train, rate,
                                   config.federation.rounds * total)
        if plan.sample_rate != rate:
            raise FedsceneError(f"scene {state.scene}: sample rate {rate:.6g} differs from "
                                f"the plan's {plan.sample_rate:.6g}; keep training.batch_size "
                                f"and the data fixed under one budget")
        exceeded, epsilon_after = would_exceed(plan, history, total)
        if exceeded:
            return TrainOutcome(BUDGET_EXHAUSTED, {}, {
                BUDGET_EXHAUSTED: 1.0, "epsilon": _spent(plan, history),
                "budget-epsilon": plan.epsilon})
    model = restore_model(state, dataset, request)
    # Digest now: state_dict() tensors alias the parameters training will change.
    digest_in = params_digest(split_state(model.state_dict(), prefixes)[1])
    dp = (DPSettings(plan.noise_multiplier, plan.max_grad_norm,
                     config.privacy.grad_sample_mode) if plan else None)
    proximal = (Proximal({k: v.clone() for k, v in request.shared.items()},
                         config.federation.proximal_mu)
                if config.federation.proximal_mu > 0 and request.shared else None)
    seed = int(np.random.default_rng([request.seed, request.round]).integers(2**31))
    negatives = train_negatives(dataset, config.data.train_negatives, request.seed,
                                request.round)
    losses = []
    if head_steps:
        report = train_local(model, dataset, negatives, config.training,
                             epochs=config.training.head_epochs, trainable=(HEAD,), dp=dp,
                             seed=seed)
        losses.append(report.mean_loss)
    trainable: tuple[str, ...] = ()
    if algorithm == "fedrep" or unlabelled:
        trainable = (ENCODER, DISC) if alignment else (ENCODER,)
    report = train_local(model, dataset, negatives, config.training,
                         epochs=config.training.local_epochs, trainable=trainable, dp=dp,
                         proximal=proximal, alignment=alignment, seed=seed + 1)
    losses.append(report.mean_loss)
    shared, local = split_state(model.state_dict(), prefixes)
    extra: dict[str, Any] = {"head_steps": head_steps, "local_state_in": digest_in,
                              "local_state_out": params_digest(local)}
    if alignment is not None:
        extra["alignment"] = "adversarial" + ("" if alignment.labelled else ", unlabelled")
    entry = _ledger(state, plan, request, total, history, extra, epsilon_after)
    state.save_local(local, {"round": request.round, "run_id": request.run_id,
                             "algorithm": algorithm, "ledger_head": entry["hash"]})
    metrics = {"train-loss": float(np.mean(losses)), "steps": float(total),
               "epsilon": float(entry["epsilon"])}
    if config.federation.send_num_examples:
        metrics[NUM_EXAMPLES] = float(dataset.n_train)
    return TrainOutcome(TRAINED, shared, metrics)


def _spent(plan: PrivacyPlan, history: list[tuple[float, float, int]]) -> float:
    return epsilon(history, plan.delta, plan.accountant)


def _ledger(state: SceneState, plan: PrivacyPlan | None, request: RoundRequest, steps: int,
            history: list[tuple[float, float, int]], extra: dict[str, Any],
            epsilon_after: float | None) -> dict[str, Any]:
    """Every training call is ledgered; without DP its epsilon is infinite, as it is."""
    if plan is not None:
        return record_training(state, plan, run_id=request.run_id, round_=request.round,
                               algorithm=request.algorithm, steps=steps, history=history,
                               extra=extra, epsilon_after=epsilon_after)
    no_dp = PrivacyPlan(epsilon=float("inf"), delta=0.0, noise_multiplier=0.0, sample_rate=0.0,
                        max_grad_norm=0.0, planned_steps=0, accountant="none", records=0)
    return record_training(state, no_dp, run_id=request.run_id, round_=request.round,
                           algorithm=request.algorithm, steps=steps, history=history,
                           extra=extra | {"mechanism": "none (privacy disabled)"})


def evaluate_round(state: SceneState, dataset: SceneDataset, request: RoundRequest
                   ) -> dict[str, float]:
    """Metrics of the current model (saved local part + received shared part)."""
    model = restore_model(state, dataset, request)
    per_user = evaluate_users(dataset, model_scorer(model))
    summary = summarize({m: per_user[m] for m in METRICS},
                        request.config.simulation.bootstrap_samples, request.seed)
    state.save_evaluation(request.round, {
        "round": request.round, "run_id": request.run_id, "scene": state.scene,
        "users": per_user["user"].tolist(),
        "per_user": {m: per_user[m].tolist() for m in METRICS},
        "summary": summary})
    out = {m: summary[m]["mean"] for m in METRICS}
    out |= {f"{m}-low": summary[m]["low"] for m in METRICS}
    out |= {f"{m}-high": summary[m]["high"] for m in METRICS}
    out["num-users"] = float(len(per_user["user"]))
    return out
