"""A scene's popularity prior: its recent item counts, released once under DP and kept.

The model's head adds `model.prior_weight` x the prior's score of each item, so a scene's model
starts from what sells in it now (`common/popularity.py`) as well as from content
similarity. The counts are personal data: under DP they are released once per scene with
the Gaussian mechanism at `privacy.prior_share` of the scene's target epsilon, ledgered as
a mechanism that composes
with training (calibration then leaves training the rest of the budget). The prior stays in
the scene's state (`head.local_ids.prior`); a federated arm also sends its released counts
to the coordinator to be pooled (`client.pooled`), which reveals nothing the release did
not.

The prior's weight is fixed, not trained. Measured on the main job's malls (3 malls, DP
prior at epsilon 4, 5 rounds of DP-SGD for the other 4): with the weight trained, DP-SGD's
sampled softmax pulled it from 2 to about 1.1 and full-HR@10 fell from 0.450 to 0.432 (lr
0.5); with it fixed, training left 0.450.
"""

from __future__ import annotations

from fedscene.client.privacy import PrivacyAccount
from fedscene.common.config import ExperimentConfig
from fedscene.common.data import SceneDataset
from fedscene.common.data.scene import Window
from fedscene.common.model import SceneModel
from fedscene.common.popularity import (
    bounded_counts,
    exact_counts,
    mean_count_to_noise,
    release_counts,
)
from fedscene.common.privacy_units import PrivacyUnit, declared_unit
from fedscene.common.randomness import NoiseSource

RELEASED = ("the scene's popularity prior (kept in the scene; under an algorithm that "
            "shares parameters its released counts are also sent to the coordinator, which "
            "pools them over the scenes by item: post-processing)")
PRIOR = "popularity-prior"  # the ledger entry's algorithm
# A scene whose mean count per item cannot reach this share of the release's noise does not
# release a prior: its counts would rank by chance (`mean_count_to_noise`, from sizes alone,
# so nothing is spent). Measured at the main job's settings (90 days; untrained model,
# full-HR@10), with a cap of 8 items a shopper: the malls at epsilon 0.5 reached 0.27 to
# 1.06 and their prior lifted content similarity's 0.297 to 0.337; the United Kingdom at
# epsilon 4 reached 0.75; Germany's 51 shoppers over 1662 items at epsilon 4 reached 0.08,
# and with that prior its local arm scored 0.215 against content similarity's 0.246. At
# the default cap of 16 the bound grows by sqrt(2): the malls 0.38 to 1.5, Germany 0.11.
MIN_COUNT_TO_NOISE = 0.15


def countable_units(dataset: SceneDataset, config: ExperimentConfig
                    ) -> tuple[PrivacyUnit, int] | None:
    """The declared unit (under DP, the one training is clipped by) and how many the scene
    holds, when it has enough to count popularity or co-purchases from: training rows and
    at least `privacy.min_units` units, with or without DP; else None."""
    unit = declared_unit(config.privacy)
    units = unit.count(dataset)
    if dataset.n_train == 0 or config.privacy.below_min_units(units):
        return None
    return unit, units


def set_prior(model: SceneModel, dataset: SceneDataset, config: ExperimentConfig,
              account: PrivacyAccount | None, randomness: NoiseSource, *, run_id: str,
              round_: int) -> dict | None:
    """Give `model` its scene's popularity prior unless the scene's ledger already holds its
    release (the model then has it from the scene's state); returns the ledger entry of
    the release (None when nothing was released under DP).

    A scene with fewer than `privacy.min_units` units keeps no prior, with or without DP:
    the counts of so few shoppers are mostly chance (measured on full Online Retail: the
    exact prior took its six countries of 12 to 30 shoppers from content similarity's 0.60
    mean full-HR@10 to 0.25). Otherwise, without DP (`account` None), the prior is the exact
    recent counts; under DP it is released when the release leaves room in the budget for
    training and when its counts can stand out of its noise (`MIN_COUNT_TO_NOISE`; else
    nothing is spent, and the scene, holding no prior, may take the federation's pooled
    one: `client.pooled`).
    """
    head, model_config = model.head, config.model
    counted = countable_units(dataset, config) if head.prior_weight else None
    if counted is None:
        return None
    unit, units = counted
    window = Window.of(model_config.popularity_days, config.data.as_of)
    if account is None:  # exact counts, recomputed each call: nothing is spent
        counts = exact_counts(dataset, window)
        head.local_ids.set_prior(counts)
        return None
    release = account.one_time_release(PRIOR, config.privacy.prior_share, units)
    if release is None:
        return None
    prior_epsilon, noise_multiplier = release
    if mean_count_to_noise(units, dataset.n_items, unit.name, model_config.popularity_items,
                           noise_multiplier) < MIN_COUNT_TO_NOISE:
        return None
    counts, sensitivity = bounded_counts(dataset, unit.name, window,
                                         model_config.popularity_items, randomness.examples)
    released = release_counts(counts, sensitivity, unit.name, prior_epsilon,
                              account.delta_for(units), randomness.examples)
    entry = account.record_counts(released.sigma / sensitivity, sensitivity, unit, units,
                                  unit.group_sizes(dataset), released=RELEASED,
                                  noise_source=randomness.description, run_id=run_id,
                                  round_=round_, algorithm=PRIOR)
    head.local_ids.set_prior(released.counts)
    return entry
