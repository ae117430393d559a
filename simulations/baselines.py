"""The baselines every report shows beside the learned arms, on the same test rows.

popularity-scene, popularity-recent (the scene's last `model.popularity_days` days only),
popularity-all (counts over every scene, by source item id), content (TF-IDF of titles:
public catalogue only), cooccurrence (item kNN: reads raw interactions, a non-private
reference) and dp-popularity (the recent counts released with the Gaussian mechanism under
the scene's privacy unit at `simulation.baseline_epsilon`, default the scene's budget).
"""

from __future__ import annotations

import numpy as np

from fedscene.client.privacy import default_delta
from fedscene.common.baselines import (
    content_scorer,
    cooccurrence_scorer,
    dp_popularity,
    popularity_scorer,
    scene_counts,
)
from fedscene.common.config import ExperimentConfig
from fedscene.common.data import SceneDataset
from fedscene.common.data.scene import Window
from fedscene.common.evaluation import Scorer, evaluate_users
from fedscene.common.metrics import METRICS
from fedscene.common.popularity import exact_counts
from fedscene.common.privacy_units import declared_unit
from fedscene.common.randomness import noise_source
from fedscene.simulations.results import (
    BaselineResult,
    PerUser,
    scene_table,
    worst_and_spread,
)

NOTES = {
    "popularity-scene": "training interactions per item in the scene, ties at random",
    "popularity-recent": "training interactions per item in the {days} days up to "
                         "data.as_of (non-private reference)",
    "popularity-all": "interactions per item over all scenes (by source item id)",
    "content": "TF-IDF cosine of titles: public catalogue only, no training, no privacy cost",
    "cooccurrence": "item kNN over co-purchases: reads raw interactions (non-private "
                    "reference)",
    "dp-popularity": "the recent counts (a shopper spreads a unit norm over at most {items} "
                     "of their items; an example adds 1), released with the Gaussian "
                     "mechanism",
}


def _overall_counts(datasets: list[SceneDataset]) -> dict[str, float]:
    overall: dict[str, float] = {}
    for d in datasets:
        for key, count in zip(d.item_keys[d.ranked_items].tolist(), scene_counts(d).tolist(),
                              strict=True):
            overall[key] = overall.get(key, 0.0) + count
    return overall


def run_baselines(config: ExperimentConfig, datasets: list[SceneDataset]
                  ) -> tuple[dict[str, BaselineResult], dict[str, dict[str, PerUser]]]:
    """Per baseline: per-scene metrics with intervals, the summary, what it reads, and (DP
    popularity) the mechanism; and the per-user metrics for paired gains."""
    overall = _overall_counts(datasets)
    privacy = config.privacy
    unit = declared_unit(privacy)
    rng = noise_source(privacy.reproducible_noise, config.data.seed).examples
    model = config.model
    window = Window.of(model.popularity_days, config.data.as_of)
    per_user: dict[str, dict[str, PerUser]] = {name: {} for name in NOTES}
    mechanisms: dict[str, dict[str, float]] = {}
    for d in datasets:
        budget = privacy.budget_for(d.scene)
        epsilon = config.simulation.baseline_epsilon or budget.epsilon
        delta = budget.delta or default_delta(unit.count(d))
        released = dp_popularity(d, unit.name, epsilon, delta, window,
                                 model.popularity_items, rng)
        mechanisms[d.scene] = {"epsilon": epsilon, "delta": delta, "sigma": released.sigma,
                               "sensitivity": released.sensitivity}
        scorers: dict[str, Scorer] = {
            "popularity-scene": popularity_scorer(scene_counts(d)),
            "popularity-recent": popularity_scorer(
                exact_counts(d, window)[d.ranked_items]),
            "popularity-all": popularity_scorer(np.array(
                [overall.get(k, 0.0) for k in d.item_keys[d.ranked_items]])),
            "content": content_scorer(d),
            "cooccurrence": cooccurrence_scorer(d),
            "dp-popularity": popularity_scorer(released.counts),
        }
        for name, scorer in scorers.items():
            per_user[name][d.scene] = evaluate_users(d, scorer)
    samples = config.simulation.bootstrap_samples
    out: dict[str, BaselineResult] = {}
    for name, scenes in per_user.items():
        table = scene_table(scenes, samples, 0)
        note = NOTES[name].format(days=f"{model.popularity_days:g}",
                                  items=model.popularity_items)
        out[name] = BaselineResult(table, {m: worst_and_spread(table, m) for m in METRICS},
                                   note)
    out["dp-popularity"].note += (f" under the {unit.name} unit (L2 sensitivity "
                                  f"{next(iter(mechanisms.values()))['sensitivity']:.3g})")
    out["dp-popularity"].mechanism = mechanisms
    return out, per_user
