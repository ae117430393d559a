"""Validated configuration of a fedscene run, loadable from TOML.

One `ExperimentConfig` drives `fedscene simulate`, `fedscene data check` and `flwr run`.
Every model forbids unknown keys, so a misspelt key is reported instead of ignored.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedscene.common.algorithms import algorithm as algorithm_named
from fedscene.common.errors import ConfigError

Algorithm = Literal["local", "fedavg", "fedper", "fedrep", "centralized"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InteractionColumns(_Strict):
    """Column names of an interactions table (`label` and `scene` may be empty)."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    label: str = ""
    scene: str = "scene"
    time_format: Literal["auto", "iso", "epoch_s", "epoch_ms"] = Field(
        "auto", description="what the time column holds: ISO dates/times, epoch seconds or "
                            "epoch milliseconds; auto tells them apart (all digits: epoch, "
                            "milliseconds from 1e11 on)")


class ItemColumns(_Strict):
    """Column names of an item table (`category` may be empty)."""

    item: str = "item_id"
    text: str = "title"
    category: str = ""
    price: str = "price"


class SyntheticConfig(_Strict):
    """Synthetic scenes with a controllable shift, for tests and known-answer experiments."""

    num_scenes: int = Field(4, ge=1, le=64)
    users_per_scene: int = Field(120, ge=2)
    num_items: int = Field(300, ge=20)
    items_per_scene: int = Field(200, ge=20)
    interactions_per_user: int = Field(20, ge=3)
    num_topics: int = Field(8, ge=2)
    shift: float = Field(0.3, ge=0.0, le=1.0, description="0 identical scenes, 1 unrelated")
    signal: float = Field(1.0, ge=0.0, le=1.0, description="0 means random interactions")
    text_signal: float = Field(1.0, ge=0.0, le=1.0,
                               description="share of title words drawn from the item's topic "
                                           "(0: random titles, no text signal)")
    seed: int = 0


class DataConfig(_Strict):
    """Where scene data comes from and how it is split and sampled."""

    source: Literal["embedded", "online_retail", "table", "synthetic"] = "embedded"
    path: str = Field("", description="online_retail: the CSV(.gz); table: interactions file")
    items_path: str = Field("", description="table: the item table file")
    columns: InteractionColumns = InteractionColumns()
    item_columns: ItemColumns = ItemColumns()
    synthetic: SyntheticConfig = SyntheticConfig()
    scene_by: Literal["category", "country"] = Field(
        "category", description="Online Retail scenes: category malls (product families read "
                                "from the titles) or countries (platforms)")
    scenes: list[str] = Field(default_factory=list, description="empty: every usable scene")
    min_users: int = Field(5, ge=2, description="scenes with fewer users are left out")
    min_user_interactions: int = Field(3, ge=2, description="users with fewer have no test")
    split: Literal["basket", "shoppers"] = Field(
        "basket", description="basket: each shopper's latest basket(s) are test, earlier ones "
                              "train; shoppers: a share of shoppers is held out whole (cold "
                              "start), their earlier baskets given only as context")
    test_baskets: int = Field(1, ge=1, description="latest baskets per shopper held out")
    session_gap_minutes: float = Field(
        0.0, ge=0.0, description="purchases this close in time form one basket (0: only the "
                                 "same timestamp, i.e. the same invoice)")
    test_shoppers: float = Field(0.2, gt=0.0, lt=1.0,
                                 description="split = shoppers: the share held out")
    eval_negatives: int = Field(99, ge=1)
    train_negatives: int = Field(4, ge=1)
    history_length: int = Field(20, ge=1)
    max_train_per_scene: int = Field(0, ge=0, description="0: no cap; else newest N kept")
    as_of: str = Field(
        "", description="public date (ISO) that time windows (model.popularity_days, "
                        "training.recent_days) end at: today for live data, the end of the "
                        "period for a historical file; never read from the data")
    seed: int = 0


class ModelConfig(_Strict):
    """Sizes of the shared encoder and the scene head."""

    embedding_dim: int = Field(32, ge=4, le=512)
    text_dim: int = Field(1024, ge=8, le=4096,
                          description="width of the public TF-IDF projection of titles")
    content_weight: float = Field(
        10.0, ge=0.0, description="initial weight of the content-similarity score in the "
                                  "head: the model starts as content similarity")
    hash_buckets: int = Field(16384, ge=64)
    max_tokens: int = Field(8, ge=1, le=64)
    price_buckets: int = Field(16, ge=2)
    category_buckets: int = Field(64, ge=2)
    head_hidden: int = Field(32, ge=4)
    local_item_ids: bool = Field(True, description="head learns a bias per local item id")
    popularity_prior: bool = Field(
        True, description="the head starts from the scene's recent item popularity, released "
                          "once under DP (privacy.prior_share) and kept in the scene")
    popularity_days: float = Field(
        0.0, ge=0.0, description="popularity counts purchases in the last this many days up "
                                 "to data.as_of (0: all training data)")
    popularity_items: int = Field(
        16, ge=1, description="most distinct items one shopper adds to popularity counts: "
                              "1/sqrt(k) to each of their k, so the L2 sensitivity is 1 "
                              "(common/popularity.py)")
    prior_weight: float = Field(2.0, ge=0.0,
                                description="weight of the popularity prior's score (fixed)")
    pooled_prior_weight: float = Field(
        0.25, ge=0.0, description="weight of the federation's pooled popularity in a scene "
                                 "with no prior of its own (too few shoppers): the released "
                                 "priors of the other scenes, summed by item (fixed; 0: "
                                 "none, and no scene sends its counts)")
    copurchase: bool = Field(
        True, description="the head adds the history's affinity in the scene's co-purchase "
                          "factors, released once under DP (privacy.copurchase_share, shopper "
                          "unit) and kept in the scene")
    copurchase_items: int = Field(
        20, ge=2, description="distinct items one shopper adds to co-purchase counts (L2 "
                              "sensitivity sqrt(m (m - 1) / 2) over item pairs)")
    copurchase_rank: int = Field(32, ge=1, le=256,
                                 description="most co-purchase factors a scene keeps")
    copurchase_weight: float = Field(
        4.0, ge=0.0, description="weight of the co-purchase affinity (fixed; it lies in "
                                 "[-1, 1])")


class TrainingConfig(_Strict):
    """Local training of one scene per round."""

    batch_size: int = Field(64, ge=1)
    local_epochs: float = Field(1.0, gt=0.0, description="passes over the scene per round")
    head_epochs: float = Field(1.0, gt=0.0, description="fedrep: head-only passes first")
    learning_rate: float = Field(
        0.1, gt=0.0, description="SGD step size of every local training (federated rounds, "
                                 "transfer adaptation, the centralized arm). Training learns "
                                 "corrections to a start that already ranks (content, prior, "
                                 "co-purchase): DP noise moves each coordinate by about "
                                 "learning_rate x noise / batch a step, and at 0.5 that "
                                 "walked the start down round after round where the signal "
                                 "is weak (random titles, local arm: 0.264 to 0.259 at 1000 "
                                 "shoppers, 0.158 to 0.149 at 150); at 0.1 the rounds hold "
                                 "(0.262 to 0.261; 0.168 throughout)")
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    recent_days: float = Field(
        0.0, ge=0.0, description="train on the rows of the last this many days up to "
                                 "data.as_of (0: all); histories still reach back before them")
    loss: Literal["softmax", "bce"] = Field(
        "softmax", description="softmax: the positive against its sampled negatives "
                               "(ranking); bce: each candidate as a binary label")


class SceneBudget(_Strict):
    """A scene's lifetime privacy budget; delta 0 means min(1e-5, 0.1 / privacy units)."""

    epsilon: float = Field(8.0, gt=0.0)
    delta: float = Field(0.0, ge=0.0, lt=1.0)
    campaign_epsilon: float = Field(
        0.0, ge=0.0, description="cumulative epsilon this campaign may reach (0: the whole "
                                 "lifetime budget); the rest stays for later campaigns")

    @model_validator(mode="after")
    def _campaign_within_lifetime(self) -> SceneBudget:
        if self.campaign_epsilon > self.epsilon:
            raise ValueError(f"campaign_epsilon {self.campaign_epsilon} exceeds the lifetime "
                             f"epsilon {self.epsilon}; lower it")
        return self


PrivacyUnitName = Literal["shopper", "example"]


class PrivacyConfig(_Strict):
    """DP-SGD at every client, by default with the shopper as the privacy unit.

    `unit = "shopper"`: Poisson sampling over shoppers; each sampled shopper's examples in a
    step (at most `max_examples_per_shopper`, drawn at random) are clipped as one
    contribution, and noise and accounting count shoppers. `unit = "example"`: each training
    example is sampled and clipped on its own (kept for comparison: a purchase changes its
    own example and, through histories and negatives, the shopper's others, and a shopper
    all of theirs, so neither is protected at the ledger's epsilon).
    """

    enabled: bool = True
    unit: PrivacyUnitName = Field("shopper", description="what one neighbouring change adds "
                                                          "or removes: a shopper or an example")
    max_examples_per_shopper: int = Field(
        16, ge=1, description="shopper unit: examples of one shopper used in one step")
    epsilon: float = Field(8.0, gt=0.0, description="default budget of every scene")
    delta: float = Field(0.0, ge=0.0, lt=1.0,
                         description="0: min(1e-5, 0.1 / units of the scene)")
    max_grad_norm: float = Field(1.0, gt=0.0)
    reproducible_noise: bool = Field(
        False, description="simulation only: draw DP noise and sampling from the run's seed so "
                           "a run repeats exactly. NOT private (whoever knows the seed can "
                           "remove the noise); every ledger entry says so and the audit fails")
    grad_sample_mode: Literal["ghost", "hooks", "functorch", "ew"] = Field(
        "ew", description="Opacus per-unit gradients: ew (PyTorch's ExpandedWeights) and hooks "
                          "materialise them, ew at about the cost of a plain step (0.99x and "
                          "1.05x in two runs of benchmarks/dp_step, hooks 1.46x and 1.59x); "
                          "ghost computes only their norms. The empirical audit's gradient "
                          "canaries need a mode that materialises them")
    accountant: Literal["prv", "rdp"] = "prv"
    prior_share: float = Field(
        0.5, gt=0.0, lt=1.0, description="of each scene's target epsilon, the share its "
                                          "popularity prior's release spends (the Gaussian "
                                          "mechanism, composed with training)")
    copurchase_share: float = Field(
        0.3, gt=0.0, lt=1.0, description="of each scene's target epsilon, the share its "
                                          "co-purchase release spends (the Gaussian "
                                          "mechanism, composed with the prior and training)")
    min_units: int = Field(
        50, ge=1, description="with fewer privacy units (of privacy.unit: shoppers by "
                              "default) a scene keeps no popularity prior (with or without "
                              "DP: so few shoppers' counts are chance) and, "
                              "under DP, does not train nor, as a transfer target, adapt "
                              "(the noise would swamp the signal): it keeps its model as it "
                              "starts and spends nothing")
    scenes: dict[str, SceneBudget] = Field(default_factory=dict)

    def below_min_units(self, units: int) -> bool:
        """Whether `units` (of the declared unit) are fewer than `min_units`: too few to
        count popularity from, with or without DP (`client.prior`)."""
        return units < self.min_units

    def too_few(self, units: int) -> bool:
        """Whether, under DP, `units` are too few to train on: the noise would swamp
        their signal."""
        return self.enabled and self.below_min_units(units)

    def budget_for(self, scene: str) -> SceneBudget:
        """The scene's own budget, else the default one."""
        return self.scenes.get(scene, SceneBudget(epsilon=self.epsilon, delta=self.delta))


class FederationConfig(_Strict):
    """Rounds and the server-side update."""

    rounds: int = Field(5, ge=1, le=10_000)
    server_learning_rate: float = Field(1.0, gt=0.0)
    server_momentum: float = Field(0.0, ge=0.0, lt=1.0)
    proximal_mu: float = Field(0.0, ge=0.0)
    send_num_examples: bool = Field(
        False, description="true: replies carry the scene's dataset size (released without "
                           "DP and ledgered as such) and averaging is weighted by it")
    release_metrics: bool = Field(
        False, description="true: replies carry training loss, timings and evaluation "
                           "metrics, each release ledgered as without DP; false: nothing but "
                           "the noised shared parameters leaves a scene")
    round_timeout_s: float = Field(3600.0, gt=0.0)
    partner_wait_s: float = Field(
        600.0, ge=0.0, description="how long each round waits for all the campaign's "
                                   "partners (nodes) to be connected before it goes on with "
                                   "those that are; the others are named as absent")
    quorum: int = Field(
        1, ge=1, description="the fewest partners a round proceeds with: with fewer "
                             "connected after partner_wait_s, or fewer accepted replies, the "
                             "round leaves the shared parameters unchanged")
    max_update_ratio: float = Field(
        10.0, ge=0.0, description="a reply whose update (its shared parameters less the "
                                  "current ones) is longer than this x the median of the "
                                  "round's and the last round's accepted updates, and than "
                                  "update_floor x the current parameters' norm, is left out "
                                  "as a failure, with its reason (0: no bound; needs 3 "
                                  "updates to judge by)")
    update_floor: float = Field(
        0.1, ge=0.0, description="an update no longer than this x the L2 norm of the current "
                                 "shared parameters is never left out as oversized, so that "
                                 "the median of small partners' updates does not reject a "
                                 "large partner's; it is also how far any one partner may "
                                 "move the shared parameters in a round among partners whose "
                                 "updates are all small (0: no floor, for a federation of "
                                 "equals)")


class AlignmentConfig(_Strict):
    """Domain-adversarial alignment (DANN) of the shared encoder across scenes.

    Each scene adds `weight` x the cross-entropy of a shared domain discriminator, fed the
    encoder's user and item vectors through a gradient-reversal layer, to every example's
    loss (so DP-SGD clips and noises it with the rest). Domains are the scenes of
    `data.scenes`, in that order.
    """

    enabled: bool = Field(False, description="train with the adversarial term")
    weight: float = Field(1.0, gt=0.0, description="adversarial loss weight per example")
    discriminator_steps: float = Field(
        5.0, gt=0.0, description="the discriminator's round update: its mean step at the "
                                 "round's start, applied this many times")
    unlabelled: list[str] = Field(
        default_factory=list,
        description="scenes that join with unlabelled data only: their users' histories "
                    "and catalogue train the encoder and discriminator, no next-item target")


TransferArm = Literal["local", "probe", "finetune", "meta", "dann", "zeroshot"]
SOURCE_ARMS = ("probe", "finetune", "zeroshot")  # start from transfer.source's encoder


class TransferConfig(_Strict):
    """Held-out target scenes adapted after federation with k labelled interactions."""

    targets: list[str] = Field(default_factory=list,
                               description="scenes kept out of federation and adapted after it")
    shots: list[int | Literal["all"]] = Field(
        default_factory=lambda: [0, 10, 100, 1000, "all"],
        description="labelled target interactions per adaptation (capped by the scene)")
    arms: list[TransferArm] = Field(
        default_factory=lambda: ["local", "probe", "finetune", "meta", "dann", "zeroshot"])
    source: Literal["fedavg", "fedper", "fedrep"] = Field(
        "fedper", description="the federated arm whose encoder probe/finetune/zeroshot use")
    adapt_epochs: float = Field(5.0, gt=0.0, description="passes over the k interactions")
    meta_server_learning_rate: float = Field(
        0.5, gt=0.0, description="Reptile outer step of the meta arm's federation")
    meta_local_epochs: float = Field(
        0.25, gt=0.0, description="inner steps of the meta arm's federation (few, as in Reptile)")
    unlabelled_targets: bool = Field(
        True, description="dann arm: targets join the aligned federation with unlabelled "
                          "data; false: only the federating scenes are aligned")
    unlabelled_budget_share: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="dann arm: the share of a target's epsilon it spends joining federation "
                    "with unlabelled data; adaptation gets the rest")

    def arms_from_source(self) -> list[str]:
        """The transfer arms that start from the `source` arm's final encoder (meta and
        dann train their own federations of the source algorithm)."""
        return [arm for arm in self.arms if arm in SOURCE_ARMS]

    @model_validator(mode="after")
    def _shots(self) -> TransferConfig:
        if any(k != "all" and k < 0 for k in self.shots):
            raise ValueError("transfer.shots: counts must be >= 0 (or 'all')")
        return self


class SimulationConfig(_Strict):
    """Arms (algorithms x seeds) and engine settings of a simulation."""

    arms: list[Algorithm] = Field(
        default_factory=lambda: ["local", "fedavg", "fedper", "fedrep", "centralized"]
    )
    seeds: list[int] = Field(default_factory=lambda: [0])
    privacy_sweep: list[float | Literal["none"]] = Field(
        default_factory=list,
        description="epsilons to run every federated arm at ('none': without DP); empty: "
                    "the privacy section as it is")
    bootstrap_samples: int = Field(1000, ge=50)
    baseline_epsilon: float = Field(
        0.0, ge=0.0, description="the DP popularity baseline's epsilon (0: each scene's "
                                 "budget)")
    client_num_cpus: float = Field(1.0, gt=0.0)
    object_store_mb: int = Field(256, ge=80)

    @model_validator(mode="after")
    def _non_empty(self) -> SimulationConfig:
        if not self.arms:
            raise ValueError("simulation.arms is empty: list at least one of "
                             "local, fedavg, fedper, fedrep, centralized")
        if not self.seeds:
            raise ValueError("simulation.seeds is empty: list at least one seed")
        if any(value != "none" and value <= 0 for value in self.privacy_sweep):
            raise ValueError("simulation.privacy_sweep: epsilons must be > 0 (or 'none')")
        return self


class ExperimentConfig(_Strict):
    """The whole run: data, model, training, privacy, federation and simulation."""

    name: str = "fedscene"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    federation: FederationConfig = FederationConfig()
    simulation: SimulationConfig = SimulationConfig()
    transfer: TransferConfig = TransferConfig()
    alignment: AlignmentConfig = AlignmentConfig()

    @model_validator(mode="after")
    def _windows_need_a_public_end(self) -> ExperimentConfig:
        windows = [key for key, days in (("model.popularity_days", self.model.popularity_days),
                                         ("training.recent_days", self.training.recent_days))
                   if days > 0]
        if windows and not self.data.as_of:
            raise ValueError(f"{' and '.join(windows)} need data.as_of, the public date the "
                             f"window ends at (e.g. \"2011-12-10\"); it is never read from "
                             f"the data, since one shopper's purchases would move it")
        if self.data.as_of:
            try:
                datetime.fromisoformat(self.data.as_of)
            except ValueError:
                raise ValueError(f"data.as_of: {self.data.as_of!r} is not an ISO date; give "
                                 f"e.g. \"2011-12-10\"") from None
        return self

    @model_validator(mode="after")
    def _releases_leave_training_room(self) -> ExperimentConfig:
        privacy = self.privacy
        if (privacy.enabled and self.model.popularity_prior and self.counts_copurchase()
                and privacy.prior_share + privacy.copurchase_share >= 1.0):
            raise ValueError(f"privacy.prior_share {privacy.prior_share} + "
                             f"privacy.copurchase_share {privacy.copurchase_share} leave "
                             f"training no budget; keep their sum below 1")
        return self

    @model_validator(mode="after")
    def _fields_agree(self) -> ExperimentConfig:
        """Rules that span sections, checked when the config loads, before any data is read
        or anything trains: each mistake is refused with the keys it involves."""
        problem = self._disagreement()
        if problem:
            raise ValueError(problem)
        return self

    def _disagreement(self) -> str | None:
        scenes, transfer = self.data.scenes, self.transfer
        repeated = _repeated({"data.scenes": scenes, "simulation.arms": self.simulation.arms,
                              "simulation.seeds": self.simulation.seeds,
                              "simulation.privacy_sweep": [
                                  v if v == "none" else f"{v:g}"
                                  for v in self.simulation.privacy_sweep],
                              "transfer.targets": transfer.targets,
                              "transfer.arms": transfer.arms,
                              "transfer.shots": [str(k) for k in transfer.shots]})
        if repeated:
            return repeated
        source_arms = transfer.arms_from_source()
        if transfer.targets and source_arms and transfer.source not in self.simulation.arms:
            return (f"transfer.source = {transfer.source!r} is not in simulation.arms "
                    f"{self.simulation.arms}: the transfer arms {source_arms} start from its "
                    f"encoder; add it to simulation.arms or pick one of them")
        if transfer.targets and source_arms and self.simulation.privacy_sweep:
            return ("simulation.privacy_sweep with transfer.targets: the transfer arms "
                    f"{source_arms} start from one federated arm at one privacy setting; "
                    "drop simulation.privacy_sweep (run the sweep without transfer) or "
                    "transfer.targets")
        # With data.scenes empty the scenes are known only from the data: the harness checks
        # then, before anything trains.
        known = [*scenes, *[t for t in transfer.targets if t not in scenes]] if scenes else []
        for key, named in (("privacy.scenes", list(self.privacy.scenes)),
                           ("alignment.unlabelled", self.alignment.unlabelled)):
            unknown = [n for n in named if known and n not in known]
            if unknown:
                return (f"{key} names {unknown}, not among data.scenes or transfer.targets "
                        f"{known}; fix the names or list the scenes")
        if self.alignment.unlabelled and not self.alignment.enabled:
            return ("alignment.unlabelled is set but alignment.enabled is false: unlabelled "
                    "scenes join only an aligned federation; enable it or empty the list")
        if self.alignment.enabled and not scenes:
            return ("alignment.enabled needs data.scenes: each federating scene's place "
                    "there is its domain class; list the scenes")
        if scenes and self.federation.quorum > len(scenes):
            return (f"federation.quorum is {self.federation.quorum} but data.scenes names "
                    f"{len(scenes)} partners; lower it to at most {len(scenes)}")
        return None

    def domain_index(self, scene: str) -> int:
        """The scene's class for the domain discriminator: its place in `data.scenes`."""
        if scene not in self.data.scenes:
            raise ConfigError(f"alignment: scene {scene!r} is not in data.scenes "
                              f"({', '.join(self.data.scenes) or 'empty'}); list every "
                              f"federating scene there so each has a domain")
        return self.data.scenes.index(scene)

    def counts_copurchase(self) -> bool:
        """Whether scenes count co-purchases: `model.copurchase` under the shopper unit (a
        purchase pairs with all its shopper's items, so under the example unit one unit's
        influence on the pairs is unbounded)."""
        return self.model.copurchase and self.privacy.unit == "shopper"

    def pools_popularity(self, algorithm: str) -> bool:
        """Whether scenes send their released popularity counts to be pooled
        (`client.pooled`): under an algorithm that shares parameters, with
        `model.pooled_prior_weight` above 0 (else no scene would use the pool)."""
        return (algorithm_named(algorithm).pools_popularity
                and self.model.pooled_prior_weight > 0)

    def aligned(self, algorithm: str) -> bool:
        """Alignment needs a shared encoder: it applies to algorithms that share one."""
        return self.alignment.enabled and algorithm_named(algorithm).alignable

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        return cls.model_validate_json(text)


def _repeated(lists: dict[str, list]) -> str | None:
    """The first key whose list names something twice (two arms, scenes or targets would
    share one state directory and one budget), as a refusal."""
    for key, values in lists.items():
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            return f"{key} lists {', '.join(twice)} more than once; list each once"
    return None


def _describe(error: ValidationError, source: str) -> str:
    """One line per problem: the dotted key, what is wrong, and what is allowed."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'; remove it or check its spelling")
        elif not key:  # a rule across sections: its message names the keys
            lines.append(f"{source}: {item['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{source}: key '{key}': {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping; raise ConfigError naming each bad key."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def set_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set section.key=value` (value parsed as TOML, else taken as a string)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. federation.rounds=3")
    key, text = assignment.split("=", 1)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: '{part}' is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None
                ) -> ExperimentConfig:
    """Read a TOML config (or the defaults when `path` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path:
        file = Path(path)
        source = str(file)
        if not file.is_file():
            raise ConfigError(f"{file}: config file not found; give the path of a .toml file")
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{file}: not valid TOML: {error}") from None
        base = file.parent
        data = raw.get("data", {})
        for key in ("path", "items_path"):  # relative data paths are relative to the config
            value = data.get(key) if isinstance(data, dict) else None
            if isinstance(value, str) and value and not Path(value).is_absolute():
                data[key] = str((base / value).resolve())
    for assignment in overrides or []:
        set_override(raw, assignment)
    return parse_config(raw, source)


def refuse_reproducible_noise(config: ExperimentConfig, source: str = "config") -> None:
    """A deployment must never draw DP noise from a seed the coordinator knows."""
    if config.privacy.enabled and config.privacy.reproducible_noise:
        raise ConfigError(f"{source}: key 'privacy.reproducible_noise' is true, which lets the "
                          f"coordinator regenerate and remove the DP noise; set it to false "
                          f"for a deployment (it is for repeatable simulations only)")
