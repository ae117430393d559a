"""Shared fixtures: small synthetic scenes that build in well under a second."""

from __future__ import annotations

import pytest
import torch

from fedscene.common.config import DataConfig, ModelConfig, SyntheticConfig
from fedscene.common.data import build_scene, load_raw_dataset
from fedscene.common.privacy_units import ExampleUnit
from fedscene.common.randomness import reproducible_source

torch.set_num_threads(1)


def seeded_training(seed: int, unit=None) -> dict:
    """`train_local` keywords for tests of learning, not privacy: example-level batches
    (or `unit`) and noise drawn from `seed`, so a run repeats."""
    return {"unit": unit or ExampleUnit(), "randomness": reproducible_source(seed)}


def synthetic_data(**overrides) -> DataConfig:
    synthetic = SyntheticConfig(**({"num_scenes": 2, "users_per_scene": 60} | overrides))
    return DataConfig(source="synthetic", synthetic=synthetic)


@pytest.fixture(scope="session")
def small_model_config() -> ModelConfig:
    return ModelConfig(embedding_dim=8, hash_buckets=512, head_hidden=8, text_dim=64)


@pytest.fixture(scope="session")
def small_scene(small_model_config):
    data = synthetic_data()
    return build_scene(load_raw_dataset(data), "scene0", data, small_model_config)
