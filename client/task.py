"""One scene's round, independent of Flower: restore, train or evaluate, save, report.

What leaves the scene is only what `shared_prefixes(algorithm, aligned)` names, noised by
DP-SGD under the scene's privacy account, and, under an algorithm that pools popularity,
the prior counts the scene already released (`client.pooled`). Loss, timings, metrics and
dataset size leave only when the config opts in (`federation.release_metrics`,
`federation.send_num_examples`), and then each release is ledgered as without DP
(`release`). The head, the ledger and per-user results stay in the state directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from fedscene.client.pooled import popularity_part, set_pooled_prior
from fedscene.client.privacy import BudgetSpent, PrivacyAccount
from fedscene.client.start import set_released_start
from fedscene.client.state import SceneState, params_digest
from fedscene.common.algorithms import Phase, shared_prefixes
from fedscene.common.algorithms import algorithm as algorithm_named
from fedscene.common.config import DataConfig, ExperimentConfig, ModelConfig
from fedscene.common.data import RawDataset, SceneDataset, build_scene, load_raw_dataset
from fedscene.common.data.scene import Window, recent_training
from fedscene.common.errors import FedsceneError
from fedscene.common.evaluation import evaluate_users, model_scorer
from fedscene.common.metrics import METRICS, summarize
from fedscene.common.model import SceneModel, build_model, is_shared, split_state
from fedscene.common.popularity import PooledCounts
from fedscene.common.privacy_units import unit_of
from fedscene.common.protocol import BUDGET_EXHAUSTED, NUM_EXAMPLES, TOO_FEW_UNITS, TRAINED
from fedscene.common.randomness import noise_source
from fedscene.common.training import (
    Alignment,
    DPSettings,
    Proximal,
    StepProbe,
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
    pooled: PooledCounts | None = None  # the federation's pooled popularity, if sent


@dataclass
class TrainOutcome:
    """A round's result: status, the shared update, and metrics that may be released (they
    leave the scene only through `released_metrics`)."""

    status: str  # TRAINED or BUDGET_EXHAUSTED
    shared: dict[str, torch.Tensor]
    metrics: dict[str, float]
    popularity: tuple[np.ndarray, np.ndarray] | None = None  # sent to be pooled, if any


def alignment_of(config: ExperimentConfig, algorithm: str, scene: str) -> Alignment | None:
    """The scene's adversarial setting this round, or None without alignment."""
    if not config.aligned(algorithm):
        return None
    return Alignment(config.domain_index(scene), config.alignment.weight,
                     labelled=scene not in config.alignment.unlabelled,
                     anchored_steps=config.alignment.discriminator_steps)


def phase_epochs(config: ExperimentConfig, phase: Phase) -> float:
    """How many passes over the scene's units a phase of a round makes."""
    return config.training.head_epochs if phase.head_epochs else config.training.local_epochs


def steps_per_round(config: ExperimentConfig, phases: list[Phase], units: int
                    ) -> tuple[float, int]:
    """(sample rate, steps over all phases) of one round over `units` privacy units."""
    batch = config.training.batch_size
    rate = sample_rate_and_steps(units, batch, config.training.local_epochs)[0]
    return rate, sum(sample_rate_and_steps(units, batch, phase_epochs(config, phase))[1]
                     for phase in phases)


def restore_model(state: SceneState, dataset: SceneDataset, request: RoundRequest
                  ) -> SceneModel:
    """Fresh model (seeded, as the server's), then the scene's local part, then shared."""
    torch.manual_seed(request.seed)
    model = build_model(request.config, dataset.n_items, request.algorithm)
    expected = model.state_dict()
    shared = shared_prefixes(request.algorithm, request.config.aligned(request.algorithm))
    foreign = sorted(k for k in request.shared if not is_shared(k, shared))
    if foreign:  # the server may set only what the algorithm shares, never a scene's head
        raise FedsceneError(f"scene {state.scene}: the server sent parameters "
                            f"{foreign[:3]} that {request.algorithm} does not share")
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


def training_seed(request: RoundRequest) -> int:
    """The seed of reproducible noise (`privacy.reproducible_noise`, simulations only)."""
    return int(np.random.default_rng([request.seed, request.round]).integers(2**31))


def train_round(state: SceneState, dataset: SceneDataset, request: RoundRequest,
                probe: StepProbe | None = None) -> TrainOutcome:
    """Train one round under the scene's budget; save state; return the shared update.

    Under DP a scene with fewer than `privacy.min_units` units does not train (status
    `TOO_FEW_UNITS`): it keeps its start and spends nothing.

    `probe` is the empirical audit's (`StepProbe`): its units are sampled, clipped, noised
    and accounted for as the scene's own.
    """
    config, algorithm = request.config, request.algorithm
    dataset = recent_training(dataset, Window.of(config.training.recent_days,
                                                 config.data.as_of))
    prefixes = shared_prefixes(algorithm, config.aligned(algorithm))
    alignment = alignment_of(config, algorithm, state.scene)
    unlabelled = alignment is not None and not alignment.labelled
    phases = algorithm_named(algorithm).phases(unlabelled, aligned=alignment is not None)
    unit = unit_of(config.privacy)
    units = unit.count(dataset) + (probe.extra_units if probe else 0)
    if config.privacy.too_few(units):
        # DP noise calibrated for so few units swamps their signal (measured at a step size
        # of 0.5: small countries fell from content similarity's 0.513 to 0.396
        # full-HR@10): the scene keeps its start (public content, and what it receives),
        # trains nothing and spends nothing.
        return TrainOutcome(TOO_FEW_UNITS, {}, {})
    rate, total = steps_per_round(config, phases, units)
    account = PrivacyAccount(state, config.privacy)
    model = restore_model(state, dataset, request)
    randomness = noise_source(config.privacy.reproducible_noise, training_seed(request))
    if not unlabelled:  # an unlabelled scene's purchases are not used, counts included
        set_released_start(model, dataset, config,
                           account if config.privacy.enabled else None, randomness,
                           run_id=request.run_id, round_=request.round)
    set_pooled_prior(model, dataset, request.pooled)
    dp, epsilon_after = None, None
    if config.privacy.enabled:
        try:
            plan = account.plan_campaign(unit, units, rate, config.federation.rounds * total)
        except BudgetSpent:  # grown data, but nothing left: say so, as any spent scene
            return TrainOutcome(BUDGET_EXHAUSTED, {}, {})
        exceeded, epsilon_after = account.would_exceed(total)
        if exceeded:
            return TrainOutcome(BUDGET_EXHAUSTED, {}, {})
        dp = DPSettings(plan.noise_multiplier, plan.max_grad_norm,
                        config.privacy.grad_sample_mode)
    # Digest now: state_dict() tensors alias the parameters training will change.
    digest_in = params_digest(split_state(model.state_dict(), prefixes)[1])
    proximal = (Proximal({k: v.clone() for k, v in request.shared.items()},
                         config.federation.proximal_mu)
                if config.federation.proximal_mu > 0 and request.shared else None)
    negatives = config.data.train_negatives
    losses, ran, head_steps = [], 0, 0
    for phase in phases:
        # The head-only phase trains the head to the current encoder: no proximal term
        # (it pulls the shared part) and no adversarial term (it trains the encoder).
        joint = not phase.head_epochs
        report = train_local(model, dataset, negatives, config.training,
                             epochs=phase_epochs(config, phase), unit=unit,
                             randomness=randomness, trainable=phase.trainable, dp=dp,
                             proximal=proximal if joint else None,
                             alignment=alignment if joint else None, probe=probe)
        losses.append(report.mean_loss)
        ran += report.steps
        head_steps += 0 if joint else report.steps
    report = replace(report, steps=ran)  # every phase, as they ran
    shared, local = split_state(model.state_dict(), prefixes)
    extra: dict[str, Any] = {"head_steps": head_steps, "local_state_in": digest_in,
                              "local_state_out": params_digest(local)}
    if alignment is not None:
        extra["alignment"] = "adversarial" + ("" if alignment.labelled else ", unlabelled")
    what = {"run_id": request.run_id, "round_": request.round, "algorithm": algorithm,
            "extra": extra}
    entry = (account.record_training(report, unit, unit.group_sizes(dataset),
                                     epsilon_after=epsilon_after, **what)
             if dp is not None else account.record_without_dp(report, **what))
    state.save_local(local, {"round": request.round, "run_id": request.run_id,
                             "algorithm": algorithm, "ledger_head": entry["hash"]})
    metrics = {"train-loss": float(np.mean(losses)), "steps": float(total),
               "epsilon": float(entry["epsilon"])}
    return TrainOutcome(TRAINED, shared, metrics, popularity_part(model, dataset)
                        if config.pools_popularity(algorithm) else None)


def released_metrics(state: SceneState, request: RoundRequest, metrics: dict[str, float],
                     num_examples: int | None = None) -> dict[str, float]:
    """What of `metrics` (and the dataset size) may leave the scene in a reply, each value
    ledgered as released without DP; nothing unless the config opts in."""
    federation = request.config.federation
    out = dict(metrics) if federation.release_metrics else {}
    if num_examples is not None and federation.send_num_examples:
        out[NUM_EXAMPLES] = float(num_examples)
    if out:
        PrivacyAccount(state, request.config.privacy).record_release(
            list(out), run_id=request.run_id, round_=request.round,
            reason="federation.release_metrics / send_num_examples in the config")
    return out


def evaluate_round(state: SceneState, dataset: SceneDataset, request: RoundRequest
                   ) -> dict[str, float]:
    """Metrics of the current model (saved local part + received shared part)."""
    model = restore_model(state, dataset, request)
    set_pooled_prior(model, dataset, request.pooled)
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
