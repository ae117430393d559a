"""What a target scene starts from: only what federation shared, never another scene's
catalogue ids or the discriminator."""

import torch

from fedscene.common.model import SceneModel, shared_prefixes, split_state
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
