"""The empirical privacy audit: a lower bound on what one scene's training actually leaks.

`fedscene audit` recomputes epsilon from the ledger; it cannot see a mechanism that does
not do what its ledger says. This audit runs the scene's real training (the client's
`train_round`, its privacy account, unit, sampling, clipping and noise) for one campaign of
`federation.rounds` rounds in a scratch state directory, with canaries inserted
(`audit/canaries.py`), scores them as a white-box and a black-box adversary would,
and turns the scores into a lower bound on epsilon at a stated confidence with the one-run
audit of Steinke, Nasr & Jagielski ("Privacy Auditing with One (1) Training Run", NeurIPS
2023), as implemented by jax-privacy's `CanaryScoreAuditor` (Bonferroni over thresholds).

The claim tested is fedscene's: the ledger's epsilon protects one shopper. Canaries are
shoppers whatever the unit, so an example-level ledger, whose epsilon protects one example,
is tested for what it would mean to a shopper (and fails). The two adversaries' bounds are
each computed at half the significance, so that "claim violated" by either holds at the
stated confidence. A bound above the ledger's epsilon proves, at that confidence, that the
claim is false: "claim violated". A bound at most the claim is "consistent", which is all an
audit can say: a one-run bound is usually far below a correct mechanism's epsilon, and never
above what perfect guesses with m canaries prove (`Bound.epsilon_ceiling`).

The canaries join the scene's data: with m = 1000 they are often as many units as the
scene's own, which changes the sample rate and steps. The claim tested is the one the
ledger records for that run (calibrated to it), so the bound remains valid;
`EmpiricalAudit.canary_share` says how much of the audited data was canaries.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fedscene.audit.canaries import GradientCanaries, ShopperCanaries
from fedscene.audit.ledgers import audit_ledger
from fedscene.client.state import SceneState
from fedscene.client.task import (
    RoundRequest,
    load_scene_dataset,
    restore_model,
    train_round,
    training_seed,
)
from fedscene.common.algorithms import algorithm as algorithm_named
from fedscene.common.algorithms import federated_names, reference_name
from fedscene.common.config import ExperimentConfig
from fedscene.common.data.scene import SceneDataset
from fedscene.common.errors import ConfigError
from fedscene.common.layout import scene_directory
from fedscene.common.ledger import TRAINING, read_ledger
from fedscene.common.model import build_model
from fedscene.common.privacy_units import shopper_rows, unit_of
from fedscene.common.protocol import TOO_FEW_UNITS, TRAINED
from fedscene.common.training import MATERIALISING_MODES

CONSISTENT = "consistent"
VIOLATED = "claim violated"
AUDIT_RUN = "empirical-audit"
INSTALL_HINT = "pip install 'fedscene[audit]' (it brings jax-privacy's one-run auditor)"


@dataclass(frozen=True)
class Bound:
    """One adversary's result: the epsilon lower bound and how its canaries scored."""

    adversary: str
    epsilon_lower: float
    epsilon_ceiling: float  # what perfect guesses would prove with these canaries
    verdict: str
    mean_score_in: float
    mean_score_out: float
    note: str = ""


@dataclass(frozen=True)
class EmpiricalAudit:
    """What the audit ran and found, for the terminal, `--json` and the report."""

    scene: str
    algorithm: str
    unit: str
    canaries: int
    included: int  # white-box canaries included (black-box: `black_box_included`)
    black_box_included: int
    canary_share: float  # canary units among all units trained on
    examples_per_canary: int
    confidence: float
    rounds: int
    steps: int
    claimed_epsilon: float
    delta: float
    noise_source: str
    white_box: Bound
    black_box: Bound
    accounting: str
    seconds: float

    @property
    def verdict(self) -> str:
        """Violated when either adversary's bound passes the claim (each bound is at half
    the significance, so the verdict holds at `confidence`)."""
        bounds = (self.white_box, self.black_box)
        return VIOLATED if any(b.verdict == VIOLATED for b in bounds) else CONSISTENT

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict}


def _auditor_class():
    """jax-privacy's one-run auditor, or a one-line error saying what to install."""
    try:
        from jax_privacy.auditing import CanaryScoreAuditor
    except ImportError:
        raise ConfigError(f"the empirical audit needs jax-privacy: {INSTALL_HINT}") from None
    return CanaryScoreAuditor


def epsilon_lower_bound(in_scores: np.ndarray, out_scores: np.ndarray, confidence: float,
                        delta: float) -> float:
    """The one-run lower bound on epsilon at `confidence` from the scores of included and
    excluded canaries (higher means "included"), with one-sided guesses and a Bonferroni
    correction over every threshold (jax-privacy's `epsilon_one_run`)."""
    if len(in_scores) == 0 or len(out_scores) == 0:
        return 0.0
    auditor = _auditor_class()(np.asarray(in_scores, float), np.asarray(out_scores, float))
    return float(auditor.epsilon_one_run(significance=1.0 - confidence, delta=delta))


def _bound(adversary: str, scores: np.ndarray, included: np.ndarray, confidence: float,
           delta: float, claimed: float, note: str = "") -> Bound:
    """One adversary's bound at `confidence` (the caller splits the significance)."""
    lower = epsilon_lower_bound(scores[included], scores[~included], confidence, delta)
    perfect = included.astype(float)
    ceiling = epsilon_lower_bound(perfect[included], perfect[~included], confidence, delta)
    return Bound(adversary, lower, ceiling, VIOLATED if lower > claimed + 1e-9 else CONSISTENT,
                 float(scores[included].mean()) if included.any() else 0.0,
                 float(scores[~included].mean()) if (~included).any() else 0.0, note)


def active_shopper_examples(dataset: SceneDataset) -> int:
    """Training examples of the scene's 90th-percentile shopper (at least 1): a canary
    shopper is an active shopper of the scene, not its median one."""
    counts = [len(rows) for rows in shopper_rows(dataset)]
    return max(1, int(np.percentile(counts, 90))) if counts else 1


def run_empirical_audit(config: ExperimentConfig, scene: str, *, canaries: int = 1000,
                        confidence: float = 0.95, algorithm: str | None = None,
                        gradient_norm: float = 10.0, examples: int | None = None,
                        seed: int | None = None, work_dir: Path | None = None
                        ) -> EmpiricalAudit:
    """Audit one campaign of `scene`'s training under `config`.

    Parameters: `canaries` m per adversary (each included with probability 1/2);
    `confidence` of the verdict; `algorithm` the training algorithm (default the
    reference, `local`); `gradient_norm` the white-box canary's norm in clipping norms;
    `examples` a canary shopper's examples (default: the scene's 90th-percentile
    shopper's); `seed` the auditor's own coins (default: OS entropy); `work_dir` where the
    scratch state goes (default: a temporary directory).
    """
    if not config.privacy.enabled:
        raise ConfigError("privacy.enabled is false: there is no claim to audit; enable it")
    algorithm = algorithm or reference_name()
    if not algorithm_named(algorithm).federated:
        raise ConfigError(f"--algorithm {algorithm} pools scenes; audit one scene's training "
                          f"with one of {', '.join(federated_names())}")
    if config.privacy.grad_sample_mode not in MATERIALISING_MODES:
        raise ConfigError(f"privacy.grad_sample_mode = {config.privacy.grad_sample_mode!r}: "
                          f"the white-box canaries join per-unit gradients in "
                          f"{', '.join(MATERIALISING_MODES)}; --set "
                          f"privacy.grad_sample_mode={MATERIALISING_MODES[0]}")
    _auditor_class()  # refuse before the training, not after it
    if examples is not None and examples < 1:
        raise ConfigError(f"--examples {examples}: a canary shopper needs at least 1 example")
    started = time.perf_counter()
    rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)
    dataset = load_scene_dataset(config, scene)
    unit = unit_of(config.privacy)
    examples = examples or active_shopper_examples(dataset)
    run_seed = config.simulation.seeds[0]
    torch.manual_seed(run_seed)
    template = build_model(config, dataset.n_items, algorithm)
    white = GradientCanaries.draw(template, canaries, unit.units_of_shopper(examples),
                                  gradient_norm * config.privacy.max_grad_norm, rng)
    black = ShopperCanaries.draw(dataset, canaries, examples, rng)
    when = (np.datetime64(config.data.as_of, "s") - np.timedelta64(1, "D")
            if config.data.as_of else dataset.train_time.max())
    audited = black.add_to(dataset, when)
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        run = _train(config, algorithm, SceneState(scene_directory(scratch, scene), scene), audited,
                     white, run_seed)
    if not run.trained:
        reason = (f"its privacy units, canaries included, are fewer than privacy.min_units "
                  f"{config.privacy.min_units}" if run.stopped_by == TOO_FEW_UNITS
                  else f"its budget (privacy.epsilon {config.privacy.epsilon:g}) allows none")
        raise ConfigError(f"scene {scene!r} trained no round: {reason}; nothing to audit")
    last = run.trained[-1]
    claimed, delta = float(last["epsilon"]), float(last["delta"])
    clip = config.privacy.max_grad_norm
    white_scores, replayed = white.scores(float(last["noise_multiplier"]) * clip, clip,
                                          float(last["sample_rate"]))
    note = ("the noise regenerated from the seeds the coordinator sent explained the "
            "updates; scored without it" if replayed else "")
    half = 1.0 - (1.0 - confidence) / 2  # two adversaries: "violated" by either at confidence
    canary_units = white.extra_units + int(black.included.sum()) * unit.units_of_shopper(
        examples)
    return EmpiricalAudit(
        scene=scene, algorithm=algorithm, unit=unit.name, canaries=canaries,
        included=int(white.included.sum()), black_box_included=int(black.included.sum()),
        canary_share=canary_units / max(int(last["units"]), 1),
        examples_per_canary=examples, confidence=confidence, rounds=len(run.trained),
        steps=sum(int(e["steps"]) for e in run.trained), claimed_epsilon=claimed,
        delta=delta, noise_source=str(last["noise_source"]),
        white_box=_bound("white-box (every noised update; Dirac gradient canaries)",
                         white_scores, white.included, half, delta, claimed, note),
        black_box=_bound("black-box (final model; canary shoppers' logit gain)",
                         black.scores(run.initial, run.final, audited), black.included, half,
                         delta, claimed),
        accounting=run.accounting, seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class _Campaign:
    """What the audited training left: the models before and after, the ledger entries of
    its training calls, and the ledger's accounting verdict."""

    initial: torch.nn.Module
    final: torch.nn.Module
    trained: list[dict]
    accounting: str
    stopped_by: str  # the status of the round that did not train (TRAINED: none)


def _train(config: ExperimentConfig, algorithm: str, state: SceneState, dataset: SceneDataset,
           probe: GradientCanaries, seed: int) -> _Campaign:
    """One campaign of the client's rounds in `state`; the shared part goes back each round
    as a one-scene federation's average would; the adversary learns each round's seeds."""
    initial = restore_model(state, dataset, _request(config, algorithm, 0, seed, {}))
    shared: dict[str, torch.Tensor] = {}
    rounds, stopped_by = 0, TRAINED
    for round_ in range(1, config.federation.rounds + 1):
        request = _request(config, algorithm, round_, seed, shared)
        probe.replay_seed(training_seed(request))
        outcome = train_round(state, dataset, request, probe=probe)
        if outcome.status != TRAINED:
            stopped_by = outcome.status
            break
        shared, rounds = outcome.shared, round_
    final = restore_model(state, dataset, _request(config, algorithm, rounds, seed, shared))
    trained = [e for e in read_ledger(state.ledger_path).entries
               if e.get("kind") == TRAINING and e.get("algorithm") == algorithm]
    return _Campaign(initial, final, trained, audit_ledger(state.ledger_path).verdict,
                     stopped_by)


def _request(config: ExperimentConfig, algorithm: str, round_: int, seed: int,
             shared: dict[str, torch.Tensor]) -> RoundRequest:
    return RoundRequest(config=config, algorithm=algorithm, round=round_, run_id=AUDIT_RUN,
                        seed=seed, shared=shared)
