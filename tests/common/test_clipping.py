"""The DP guarantee holds only if every example's gradient is clipped to the configured
norm. This checks it with the very model, loss, grad-sample mode and Opacus wrapping that
`train_local` uses, against per-example gradients computed independently by autograd."""

import copy

import numpy as np
import pytest
import torch

from fedscene.common.batches import train_batch, unlabelled_batch
from fedscene.common.config import TrainingConfig
from fedscene.common.data.scene import train_negatives
from fedscene.common.model import SceneModel
from fedscene.common.training import (
    AlignedExampleLoss,
    DPSettings,
    ExampleLoss,
    _index_loader,
    _make_private,
)

# (domains, labelled): plain recommendation, the adversarial term added to it, and an
# unlabelled scene's adversarial term alone.
OBJECTIVES = [(0, True), (3, True), (3, False)]


def _criterion(domains: int, labelled: bool, reduction: str):
    if not domains:
        return ExampleLoss(reduction)
    return AlignedExampleLoss(domain=1, weight=0.5, labelled=labelled, reduction=reduction)


def _trained(model):
    return [p for p in model.parameters() if p.requires_grad]


def _per_example_grads(model, scene, negatives, index, domains, labelled):
    batch_of = train_batch if labelled else unlabelled_batch
    grads = []
    for row in index:
        inputs, labels = batch_of(scene, negatives, np.array([row]))
        model.zero_grad()
        _criterion(domains, labelled, "sum")(model(*inputs), labels).backward()
        grads.append(torch.cat([p.grad.flatten() for p in _trained(model)]).clone())
    return torch.stack(grads)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
@pytest.mark.parametrize("clip", [0.05, 0.5])
@pytest.mark.parametrize(("domains", "labelled"), OBJECTIVES)
def test_every_example_gradient_is_clipped(small_scene, small_model_config, mode, clip,
                                           domains, labelled):
    torch.manual_seed(0)
    model = SceneModel(small_model_config, small_scene.n_items, domains)
    model.return_domains = domains > 0
    if not labelled:  # as in training: an unlabelled scene has no head loss to train
        model.head.requires_grad_(False)
    reference = copy.deepcopy(model)
    negatives = train_negatives(small_scene, 4, 0, 0)
    index = np.arange(24)
    grads = _per_example_grads(reference, small_scene, negatives, index, domains, labelled)
    norms = grads.norm(dim=1)
    assert (norms > clip).any()  # the check is only meaningful if clipping bites
    expected = (grads * (clip / (norms + 1e-6)).clamp(max=1.0)[:, None]).sum(0)

    work = copy.deepcopy(model)
    work.train()
    optimizer = torch.optim.SGD(_trained(work), lr=0.1)
    loader = _index_loader(len(index), len(index), 0)
    module, optimizer, criterion, _ = _make_private(
        work, optimizer, loader, DPSettings(0.0, clip, mode), seed=0,
        criterion=_criterion(domains, labelled, "mean"))
    inputs, labels = (train_batch if labelled else unlabelled_batch)(small_scene, negatives,
                                                                       index)
    optimizer.zero_grad()
    criterion(module(*inputs), labels).backward()
    optimizer.pre_step()  # clip, add (zero) noise, scale by the expected batch size
    got = torch.cat([p.grad.flatten() for p in _trained(work)]) * optimizer.expected_batch_size
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # Each example's clipped contribution is within the norm.
    clipped = grads * (clip / (norms + 1e-6)).clamp(max=1.0)[:, None]
    assert (clipped.norm(dim=1) <= clip * (1 + 1e-5)).all()


def test_training_uses_ghost_mode_by_default():
    from fedscene.common.config import PrivacyConfig

    assert PrivacyConfig().grad_sample_mode == "ghost"
    assert TrainingConfig().batch_size > 0
