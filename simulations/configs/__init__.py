"""The packaged configs: the main job's (`default.toml`) and the documented experiments."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def packaged_config(name: str) -> Path:
    """The path of a packaged config, e.g. "online_retail.toml"."""
    return Path(str(resources.files(__name__) / name))


def default_config_path() -> Path:
    """The main job's config: what `fedscene simulate` runs without one."""
    return packaged_config("default.toml")
