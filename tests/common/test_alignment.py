"""Domain-adversarial alignment: the reversal layer, the shared discriminator group, and the
federated discriminator that tells scenes apart although each scene sees only its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedscene.common.algorithms import DISC, shared_prefixes
from fedscene.common.config import ExperimentConfig, TrainingConfig
from fedscene.common.data import build_scene, load_raw_dataset
from fedscene.common.errors import ConfigError
from fedscene.common.model import (
    SceneModel,
    build_model,
    reverse_gradient,
    split_state,
)
from fedscene.common.privacy_units import ExampleUnit
from fedscene.common.training import AlignedExampleLoss, Alignment, DPSettings, train_local
from tests.conftest import seeded_training as _run
from tests.conftest import synthetic_data


def test_reversal_is_identity_forward_and_negates_gradients():
    x = torch.randn(5, 3, requires_grad=True)
    y = reverse_gradient(x)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.equal(x.grad, -torch.arange(3.0).expand(5, 3))


def _config(**alignment) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "data": {"scenes": ["a", "b", "c"]}, "alignment": {"enabled": True} | alignment})


def test_discriminator_is_its_own_shared_group_for_federated_algorithms(small_model_config):
    config = _config()
    assert build_model(config, 10, "fedper").disc.out.weight.shape == (3, 32)
    assert build_model(config, 10, "local").disc is None  # nothing to align alone
    assert build_model(config.model_copy(update={"alignment": config.alignment.model_copy(
        update={"enabled": False})}), 10, "fedper").disc is None
    state = SceneModel(small_model_config, 10, domains=3).state_dict()
    for algorithm in ("fedavg", "fedper", "fedrep"):
        shared, local = split_state(state, shared_prefixes(algorithm, aligned=True))
        assert {k for k in shared if k.startswith(DISC)} == {"disc.out.weight"}
        assert not any(k.startswith("head.local_ids.") for k in shared)
        assert not any(k.startswith(DISC) for k in local)
    assert split_state(state, shared_prefixes("fedper"))[0].keys().isdisjoint({"disc.out.weight"})


def test_domain_of_a_scene_not_listed_is_a_clear_error():
    assert _config().domain_index("c") == 2
    with pytest.raises(ConfigError, match=r"'d' is not in data.scenes \(a, b, c\)"):
        _config().domain_index("d")


def test_unlabelled_scene_trains_encoder_and_discriminator_not_the_head(small_scene,
                                                                        small_model_config):
    model = SceneModel(small_model_config, small_scene.n_items, domains=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_local(model, small_scene, 4, TrainingConfig(),
                epochs=1, trainable=("encoder.", DISC), dp=DPSettings(1.0, 1.0),
                alignment=Alignment(domain=1, weight=1.0, labelled=False), **_run(0))
    after = model.state_dict()
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (not name.startswith("head.")), name
    assert model.return_domains is False  # evaluation gets plain logits again


def _pooled_gradient(model: SceneModel, scene, negatives, domain: int) -> torch.Tensor:
    """The discriminator's gradient of the adversarial loss over every example of a scene."""
    model.zero_grad()
    model.return_domains = True
    batch = ExampleUnit().batch(scene, np.arange(scene.n_train), np.random.default_rng(0),
                                True, negatives)
    AlignedExampleLoss(domain, 1.0, labelled=True)(model(*batch.inputs), batch.labels).backward()
    model.return_domains = False
    return model.disc.out.weight.grad.clone()


def test_averaged_discriminator_update_is_the_pooled_gradient_step(small_model_config):
    """Each scene trains the shared discriminator with its own domain only. Held at its
    starting value, the scenes' averaged update points along the gradient of the loss over
    both scenes' examples, as central training would; trained step by step, each copy
    drifts to answering its own domain."""
    data = synthetic_data(num_scenes=2, users_per_scene=60, shift=1.0)
    raw = load_raw_dataset(data)
    scenes = [build_scene(raw, f"scene{i}", data, small_model_config) for i in range(2)]
    torch.manual_seed(0)
    start = SceneModel(small_model_config, 1, domains=2)
    torch.nn.init.normal_(start.disc.out.weight, std=0.5)
    shared = {k: v.clone() for k, v in start.state_dict().items()
              if k.startswith(("encoder.", DISC))}
    training = TrainingConfig(batch_size=32, learning_rate=0.1)
    updates, pooled = [], []
    for domain, scene in enumerate(scenes):
        negatives = 4
        local = SceneModel(small_model_config, scene.n_items, domains=2)
        local.load_state_dict(shared, strict=False)
        pooled.append(_pooled_gradient(local, scene, negatives, domain))
        train_local(local, scene, negatives, training, epochs=1, trainable=(DISC,), **_run(0),
                    alignment=Alignment(domain=domain, weight=1.0))
        updates.append(local.disc.out.weight.detach() - shared["disc.out.weight"])
    averaged = (updates[0] + updates[1]).flatten() / 2
    descent = -(pooled[0] + pooled[1]).flatten() / 2
    cosine = torch.nn.functional.cosine_similarity(averaged, descent, dim=0)
    assert float(cosine) > 0.98, float(cosine)
    expected_scale = Alignment(0, 1.0).anchored_steps * training.learning_rate
    assert float(averaged.norm()) == pytest.approx(expected_scale * float(descent.norm()), rel=0.1)


def test_config_round_trips_alignment():
    config = _config(weight=0.5, unlabelled=["c"])
    again = ExperimentConfig.from_json(config.to_json())
    assert again.alignment == config.alignment
    assert json.loads(config.to_json())["alignment"]["unlabelled"] == ["c"]
