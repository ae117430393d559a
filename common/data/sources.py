"""Load a dataset from the configured source and choose its scenes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fedscene.common.config import DataConfig
from fedscene.common.data.contract import (
    RawDataset,
    check_referential_integrity,
    read_table,
    validate_interactions,
    validate_items,
)
from fedscene.common.data.online_retail import load_online_retail
from fedscene.common.data.synthetic import generate_synthetic
from fedscene.common.errors import DataError


def embedded_path() -> Path:
    """The packaged Online Retail slice (CC BY 4.0, see embedded/ATTRIBUTION.txt)."""
    return Path(str(resources.files("fedscene.common.data") / "embedded"
                    / "online_retail_malls.csv.gz"))


def load_raw_dataset(config: DataConfig) -> RawDataset:
    """Read and validate the configured source into canonical tables."""
    if config.source == "embedded":
        return load_online_retail(embedded_path(), config.scene_by)
    if config.source == "online_retail":
        if not config.path:
            raise DataError("data.path: empty; give the Online Retail CSV or CSV.gz file")
        return load_online_retail(config.path, config.scene_by)
    if config.source == "synthetic":
        return generate_synthetic(config.synthetic)
    interactions = validate_interactions(read_table(config.path, "interactions"),
                                         config.columns, str(config.path))
    items = validate_items(read_table(config.items_path, "items"), config.item_columns,
                           str(config.items_path))
    raw = RawDataset(interactions=interactions, items=items, origin=str(config.path))
    check_referential_integrity(raw)
    return raw


def resolve_scenes(raw: RawDataset, config: DataConfig) -> list[str]:
    """The configured scenes, checked; else every scene with at least `min_users` users."""
    users = raw.interactions.groupby("scene")["user"].nunique().sort_values(ascending=False)
    if config.scenes:
        for scene in config.scenes:
            if scene not in users.index:
                known = ", ".join(users.index[:40])
                raise DataError(f"data.scenes: unknown scene {scene!r} in {raw.origin}; "
                                f"known scenes: {known}")
            if users[scene] < 2:
                raise DataError(f"data.scenes: scene {scene!r} has {users[scene]} user(s) in "
                                f"{raw.origin}; a scene needs at least 2 users, remove it")
        return list(config.scenes)
    chosen = [scene for scene, count in users.items() if count >= config.min_users]
    if not chosen:
        raise DataError(f"{raw.origin}: no scene has {config.min_users} or more users; lower "
                        f"data.min_users or name scenes in data.scenes")
    return chosen
