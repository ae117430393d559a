"""What a target scene starts from: only what federation shared, never another scene's
catalogue ids or the discriminator."""

import numpy as np
import torch

from fedscene.common.algorithms import shared_prefixes
from fedscene.common.model import SceneModel, split_state
from fedscene.simulations.transfer import _model


def _shared(config, algorithm: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    source = SceneModel(config.model, 40, domains=3)
    for param in source.parameters():
        torch.nn.init.normal_(param)
    return split_state(source.state_dict(), shared_prefixes(algorithm, aligned=True))[0]


def test_target_takes_the_shared_encoder_and_a_shared_head_only(small_scene,
                                                                small_model_config):
    from fedscene.common.config import ExperimentConfig

    config = ExperimentConfig(model=small_model_config)
    for algorithm, head_carried in (("fedper", False), ("fedavg", True)):
        shared = _shared(config, algorithm)
        model = _model(config, small_scene, 0, shared)
        state = model.state_dict()
        assert model.disc is None
        for name, value in state.items():
            carried = name in shared and torch.equal(value, shared[name])
            if name.startswith("encoder."):
                assert carried, name
            elif name.startswith("head.local_ids."):
                assert not carried and torch.count_nonzero(value) == 0, name
            else:
                assert carried == head_carried, (algorithm, name)


def _users(hits: list[int]) -> dict:
    from fedscene.common.metrics import METRICS

    values = np.asarray(hits, dtype=float)
    return {"user": np.arange(len(values))} | {m: values for m in METRICS}


def test_label_efficiency_finds_the_first_k_not_clearly_below_local_with_all():
    from fedscene.simulations.results import Efficiency
    from fedscene.simulations.transfer import label_efficiency

    n = 200
    full = [1] * (n // 2) + [0] * (n // 2)  # local with all its data: 0.5
    weak = [1] * (n // 10) + [0] * (n - n // 10)  # 0.1: clearly below
    users_at = {"0": {"local": _users(weak), "zeroshot": _users(weak)},
                "10": {"local": _users(weak), "finetune": _users(full)},
                "100": {"local": _users(full), "finetune": _users(full)},
                "all": {"local": _users(full), "finetune": _users(weak)}}
    found = label_efficiency(users_at, 200)
    assert found["finetune"].k == "10" and found["finetune"].gain["mean"] == 0.0
    assert found["local"].k == "100"
    assert found["zeroshot"] == Efficiency(None, None)
    assert label_efficiency({"0": users_at["0"]}, 200) == {}  # no local with all: no answer
