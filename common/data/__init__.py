"""Scene data: the contract, the built-in sources, splitting and negative sampling."""

from fedscene.common.data.contract import RawDataset
from fedscene.common.data.scene import SceneDataset, build_scene
from fedscene.common.data.sources import load_raw_dataset, resolve_scenes

__all__ = ["RawDataset", "SceneDataset", "build_scene", "load_raw_dataset", "resolve_scenes"]
