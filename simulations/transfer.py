"""Transfer to held-out scenes: adapt with k labelled interactions, compare with local-only.

For each target scene, seed and k, every arm starts from its initialisation, trains on the
same k interactions (sampled by user and time from the target's training data, never its
test data) under the target's own privacy budget and ledger, and is evaluated on the
target's full test set:

- `local`: a fresh model, the baseline every gain is measured against;
- `probe`: the federated encoder frozen, the head trained (new, or from the federation's
  shared head when the source algorithm shares one, as `fedavg` does);
- `finetune`: the federated encoder and the head, all trained;
- `meta`: as finetune, from an encoder federated with the Reptile-style server update;
- `dann`: as finetune, from an encoder federated with domain-adversarial alignment, in
  which the target took part with unlabelled data; that participation already spent part
  of the target's budget, so its adaptation continues the same ledger with what is left;
- `zeroshot` (k = 0 only): no training; the shared model as it is when it includes a head,
  else the federated encoder's user-item similarity.

A gain whose interval lies below zero is reported as negative transfer. Label efficiency
compares every (arm, k) with local-only trained on all of the target's data, paired over
the same test users: the smallest k at which an arm is no longer clearly worse than that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedscene.client.privacy import PrivacyAccount
from fedscene.client.start import set_released_start
from fedscene.client.state import SceneState
from fedscene.common.algorithms import ENCODER, HEAD, LOCAL_IDS
from fedscene.common.config import ExperimentConfig
from fedscene.common.data import SceneDataset
from fedscene.common.data.scene import with_training_rows
from fedscene.common.errors import FedsceneError
from fedscene.common.evaluation import encoder_scorer, evaluate_users, model_scorer
from fedscene.common.layout import RunLayout, scene_directory
from fedscene.common.metrics import PRIMARY
from fedscene.common.model import SceneModel
from fedscene.common.privacy_units import unit_of
from fedscene.common.randomness import noise_source
from fedscene.common.training import DPSettings, sample_rate_and_steps, train_local
from fedscene.simulations.results import (
    Efficiency,
    PerUser,
    ShotResult,
    TargetResult,
    average_seeds,
    gain,
    scene_table,
)

Shot = int | str


@dataclass(frozen=True)
class TransferStart:
    """Where an arm starts: the federation's final shared parameters and, when the target
    took part in that federation, its state directory there (whose ledger continues)."""

    shared: dict[str, torch.Tensor]
    target_states: Path | None = None


def few_shot(dataset: SceneDataset, k: Shot, seed: int) -> SceneDataset:
    """The target's first k training interactions of users taken in a seeded random order.

    Whole user histories are taken in time order (the last user's cut at its earliest
    interactions), so adaptation sees what a new platform would have collected first.
    """
    if k == "all" or int(k) >= dataset.n_train:
        return dataset
    users = np.random.default_rng([seed, 7]).permutation(np.unique(dataset.train_user))
    chosen: list[np.ndarray] = []
    left = int(k)
    for user in users:
        if left <= 0:
            break
        rows = np.flatnonzero(dataset.train_user == user)[:left]
        chosen.append(rows)
        left -= len(rows)
    keep = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
    return with_training_rows(dataset, keep)


def shots_for(config: ExperimentConfig, dataset: SceneDataset) -> list[Shot]:
    """Configured k values capped by the scene, in increasing order ("all" last; duplicates
    after capping dropped)."""
    out: list[Shot] = []
    for k in config.transfer.shots:
        capped: Shot = "all" if k == "all" or int(k) >= dataset.n_train else int(k)
        if capped not in out:
            out.append(capped)
    return sorted(out, key=lambda k: float("inf") if k == "all" else int(k))


def _model(config: ExperimentConfig, dataset: SceneDataset, seed: int,
           shared: dict[str, torch.Tensor] | None) -> SceneModel:
    """A fresh model for the target with what federation shared: the encoder, and the
    head's scoring layers when the source shared them (`fedavg`). The discriminator and
    local item ids are never carried over."""
    torch.manual_seed(seed)
    model = SceneModel(config.model, dataset.n_items)
    if shared:
        model.load_state_dict({k: v for k, v in shared.items()
                               if k.startswith((ENCODER, HEAD)) and not k.startswith(LOCAL_IDS)},
                              strict=False)
    return model


def _has_shared_head(shared: dict[str, torch.Tensor] | None) -> bool:
    return bool(shared) and any(k.startswith(HEAD) for k in shared)


def adapt(config: ExperimentConfig, target: SceneDataset, arm: str, k: Shot, seed: int,
          start: TransferStart | None, state_dir: Path
          ) -> tuple[PerUser, dict[str, Any], bool]:
    """Adapt one arm with k interactions; per-user test metrics, the privacy spent, and
    whether it trained (not at k = 0, nor under DP with fewer than `privacy.min_units`)."""
    model = _model(config, target, seed, start.shared if start else None)
    if arm == "zeroshot":  # the shared model as it is; without a shared head, similarity
        scorer = (model_scorer(model) if _has_shared_head(start.shared if start else None)
                  else encoder_scorer(model))
        return evaluate_users(target, scorer), {}, False
    subset = few_shot(target, k, seed)
    privacy: dict[str, Any] = {}
    unit = unit_of(config.privacy)
    units = unit.count(subset)
    too_few = config.privacy.too_few(units)
    trains = k != 0 and subset.n_train > 0 and not too_few  # else the start, unchanged
    if trains:
        epochs = config.transfer.adapt_epochs
        randomness = noise_source(config.privacy.reproducible_noise, seed)
        dp, account = None, None
        if config.privacy.enabled:
            state = SceneState(state_dir, target.scene)
            account = (PrivacyAccount.continued(
                SceneState(scene_directory(start.target_states, target.scene), target.scene),
                state, config.privacy)
                if start is not None and start.target_states is not None
                else PrivacyAccount(state, config.privacy))
        set_released_start(model, subset, config, account, randomness,
                           run_id=f"transfer-{arm}-k{k}",
                           round_=len(account.history) + 1 if account else 1)
        if account is not None:
            rate, steps = sample_rate_and_steps(units, config.training.batch_size, epochs)
            plan = account.plan_campaign(unit, units, rate, steps)
            exceeded, epsilon_after = account.would_exceed(steps)
            if exceeded:
                raise FedsceneError(f"transfer {arm} k={k}: {steps} steps would pass scene "
                                    f"{target.scene}'s budget of {plan.target_epsilon:g}")
            dp = DPSettings(plan.noise_multiplier, plan.max_grad_norm,
                            config.privacy.grad_sample_mode)
        trainable = (HEAD,) if arm == "probe" else ()
        report = train_local(model, subset, config.data.train_negatives, config.training,
                             epochs=epochs, unit=unit, randomness=randomness,
                             trainable=trainable, dp=dp)
        if account is not None:
            earlier = len(account.history)
            entry = account.record_training(
                report, unit, unit.group_sizes(subset),
                run_id=f"transfer-{arm}-k{k}", round_=earlier + 1,
                algorithm=f"transfer:{arm}", extra={"shots": str(k)},
                epsilon_after=epsilon_after)
            privacy = {"epsilon": entry["epsilon"], "budget_epsilon": plan.epsilon,
                       "units": units, "noise_multiplier": plan.noise_multiplier,
                       "earlier_entries": earlier}
    return evaluate_users(target, model_scorer(model)), privacy, trains


def run_transfer(config: ExperimentConfig, targets: list[SceneDataset], out_dir: Path,
                 initial: dict[str, dict[int, TransferStart]], progress
                 ) -> dict[str, TargetResult]:
    """Every target x k x arm x seed; `initial[arm][seed]` is where the arm starts."""
    samples = config.simulation.bootstrap_samples
    results: dict[str, TargetResult] = {}
    for target in targets:
        per_k: dict[str, ShotResult] = {}
        users_at: dict[str, dict[str, PerUser]] = {}
        for k in shots_for(config, target):
            if k == 0:  # nothing to train on: the untrained baseline and zero-shot scoring
                arms = [a for a in config.transfer.arms if a in ("local", "zeroshot")]
            else:
                arms = [a for a in config.transfer.arms if a != "zeroshot"]
            per_arm: dict[str, PerUser] = {}
            privacy: dict[str, list[dict[str, Any]]] = {}
            adapted: dict[str, bool] = {}
            for arm in arms:
                runs = []
                for seed in config.simulation.seeds:
                    start = initial.get(arm, {}).get(seed)
                    state_dir = RunLayout(out_dir).transfer(target.scene, arm, k, seed)
                    per_user, spent, trained = adapt(config, target, arm, k, seed, start,
                                                     state_dir)
                    runs.append(per_user)
                    adapted[arm] = adapted.get(arm, True) and trained
                    if spent:
                        privacy.setdefault(arm, []).append(spent)
                per_arm[arm] = average_seeds(runs)
            table = scene_table(per_arm, samples, 0)
            entry = ShotResult(metrics=table, privacy=privacy, gain={}, adapted=adapted)
            for arm, values in per_arm.items():
                if arm != "local" and "local" in per_arm:
                    entry.gain[arm] = gain(values, per_arm["local"], samples, 0)
            per_k[str(k)] = entry
            # Label efficiency counts an arm at k only if it used those k labels.
            users_at[str(k)] = {a: v for a, v in per_arm.items() if k == 0 or adapted[a]}
            progress(f"transfer {target.scene} k={k}: " + ", ".join(
                f"{a} {table[a][PRIMARY]['mean']:.3f}" for a in per_arm))
        results[target.scene] = TargetResult(target.n_train, per_k,
                                             label_efficiency(users_at, samples))
    return results


def label_efficiency(users_at: dict[str, dict[str, PerUser]], samples: int
                     ) -> dict[str, Efficiency]:
    """Per arm (local included): the smallest k whose PRIMARY metric is not clearly below
    local-only with all of the target's data (the paired gain's interval reaches zero),
    with that gain; k is None when no k reaches it. `users_at[k][arm]` are per-user values
    of the arms that used k labels, k in increasing order ("all" last). Empty when local
    did not run with all the data."""
    reference = users_at.get("all", {}).get("local")
    if reference is None:
        return {}
    out: dict[str, Efficiency] = {}
    arms = dict.fromkeys(a for per_arm in users_at.values() for a in per_arm)
    for arm in arms:
        out[arm] = Efficiency()
        for k, per_arm in users_at.items():
            if arm not in per_arm:
                continue
            compared = gain(per_arm[arm], reference, samples, 0)[PRIMARY]
            if compared["verdict"] != "loss":
                out[arm] = Efficiency(k, compared)
                break
    return out


def negative_transfer(results: dict[str, TargetResult], metric: str = PRIMARY
                      ) -> list[dict[str, Any]]:
    """Every (target, k, arm) whose gain interval lies below zero."""
    flagged = []
    for target, info in results.items():
        for k, entry in info.shots.items():
            for arm, gains in entry.gain.items():
                if gains[metric]["verdict"] == "loss":
                    flagged.append({"target": target, "k": k, "arm": arm} | gains[metric])
    return flagged

