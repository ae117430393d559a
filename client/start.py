"""What a scene's model starts from besides public content: its released popularity prior
and co-purchase factors, each released once under DP (or exact without DP) and kept."""

from __future__ import annotations

from fedscene.client.copurchase import set_copurchase
from fedscene.client.prior import set_prior
from fedscene.client.privacy import PrivacyAccount
from fedscene.common.config import ExperimentConfig
from fedscene.common.data import SceneDataset
from fedscene.common.model import SceneModel
from fedscene.common.randomness import NoiseSource


def set_released_start(model: SceneModel, dataset: SceneDataset, config: ExperimentConfig,
                       account: PrivacyAccount | None, randomness: NoiseSource, *,
                       run_id: str, round_: int) -> list[dict]:
    """Give `model` its scene's popularity prior, then its co-purchase factors
    (`client.prior`, `client.copurchase`); returns the ledger entries of what was released
    now under DP (`account`; None: without DP, nothing is spent)."""
    entries = []
    for release in (set_prior, set_copurchase):
        entry = release(model, dataset, config, account, randomness, run_id=run_id,
                        round_=round_)
        if entry is not None:
            entries.append(entry)
    return entries
