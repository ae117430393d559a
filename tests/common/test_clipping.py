"""The DP guarantee holds only if every privacy unit's gradient is clipped to the configured
norm: one example, or one shopper's whole contribution in a step. This checks it with the
very model, loss, grad-sample mode and Opacus wrapping that `train_local` uses, against
per-unit gradients computed independently by autograd."""

import copy

import numpy as np
import pytest
import torch

from fedscene.common.config import TrainingConfig
from fedscene.common.model import SceneModel
from fedscene.common.privacy_units import ExampleUnit, ShopperUnit, shopper_rows
from fedscene.common.randomness import reproducible_source
from fedscene.common.training import (
    AlignedExampleLoss,
    DPSettings,
    ExampleLoss,
    _unit_loader,
    make_private,
    train_local,
)

# (domains, labelled): plain recommendation, the adversarial term added to it, and an
# unlabelled scene's adversarial term alone.
OBJECTIVES = [(0, True), (3, True), (3, False)]
UNITS = {"example": ExampleUnit(), "shopper": ShopperUnit(max_examples=6)}


def _criterion(domains: int, labelled: bool, reduction: str):
    if not domains:
        return ExampleLoss(reduction=reduction)
    return AlignedExampleLoss(domain=1, weight=0.5, labelled=labelled, reduction=reduction)


def _trained(model):
    return [p for p in model.parameters() if p.requires_grad]


def _slice(batch, i):
    inputs = tuple(t[i:i + 1] for t in batch.inputs)
    weights = None if batch.weights is None else batch.weights[i:i + 1]
    return inputs, batch.labels[i:i + 1], weights


def _per_unit_grads(model, batch, count, domains, labelled):
    """Each unit's gradient on its own: its example's loss, or its shopper's loss."""
    grads = []
    for i in range(count):
        inputs, labels, weights = _slice(batch, i)
        model.zero_grad()
        _criterion(domains, labelled, "sum")(model(*inputs), labels, weights).backward()
        grads.append(torch.cat([p.grad.flatten() for p in _trained(model)]).clone())
    return torch.stack(grads)


@pytest.mark.parametrize("unit_name", sorted(UNITS))
@pytest.mark.parametrize("mode", ["ghost", "hooks", "ew"])
@pytest.mark.parametrize("clip", [0.05, 0.3])
@pytest.mark.parametrize(("domains", "labelled"), OBJECTIVES)
def test_every_unit_gradient_is_clipped(small_scene, small_model_config, unit_name, mode, clip,
                                        domains, labelled):
    unit = UNITS[unit_name]
    torch.manual_seed(0)
    model = SceneModel(small_model_config, small_scene.n_items, domains)
    # As after some training: the correction layer starts at zero, which would hide the
    # layers behind it from the check.
    torch.nn.init.normal_(model.head.out.weight, std=0.5)
    model.return_domains = domains > 0
    if not labelled:  # as in training: an unlabelled scene has no head loss to train
        model.head.requires_grad_(False)
    units = np.arange(12)
    batch = unit.batch(small_scene, units, np.random.default_rng(0), labelled, 4)
    if unit_name == "shopper":  # several examples per shopper, some shoppers capped
        counts = [len(shopper_rows(small_scene)[u]) for u in units]
        assert min(counts) > 1 and max(counts) > unit.max_examples
        assert batch.inputs[0].shape[:2] == (12, unit.max_examples)
    grads = _per_unit_grads(copy.deepcopy(model), batch, len(units), domains, labelled)
    norms = grads.norm(dim=1)
    assert (norms > clip).any()  # the check is only meaningful if clipping bites
    clipped = grads * (clip / (norms + 1e-6)).clamp(max=1.0)[:, None]
    expected = clipped.sum(0)

    work = copy.deepcopy(model)
    work.train()
    optimizer = torch.optim.SGD(_trained(work), lr=0.1)
    loader = _unit_loader(len(units), len(units), torch.Generator())
    module, optimizer, criterion, _ = make_private(
        work, optimizer, loader, DPSettings(0.0, clip, mode),
        _criterion(domains, labelled, "mean"), torch.Generator())
    optimizer.zero_grad()
    criterion(module(*batch.inputs), batch.labels, batch.weights).backward()
    optimizer.pre_step()  # clip, add (zero) noise, scale by the expected batch size
    got = torch.cat([p.grad.flatten() for p in _trained(work)]) * optimizer.expected_batch_size
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (clipped.norm(dim=1) <= clip * (1 + 1e-5)).all()


@pytest.mark.parametrize("unit_name", sorted(UNITS))
@pytest.mark.parametrize("mode", ["hooks", "ew"])
@pytest.mark.parametrize("drawn", [1, 5])
def test_a_short_poisson_batch_with_released_buffers_is_clipped_per_unit(
        small_scene, small_model_config, unit_name, mode, drawn):
    """Poisson sampling draws fewer units than the expected batch (12 here): each unit's
    gradient must still be its own (ExpandedWeights scales by the drawn batch, the optimizer
    divides by the expected one), with the prior, pooled and co-purchase terms in the
    logits."""
    unit = UNITS[unit_name]
    torch.manual_seed(0)
    model = SceneModel(small_model_config, small_scene.n_items)
    torch.nn.init.normal_(model.head.out.weight, std=0.5)
    local, n = model.head.local_ids, small_scene.n_items
    local.set_prior(np.random.default_rng(1).integers(0, 20, n).astype(float))
    local.set_pooled(np.random.default_rng(2).integers(0, 20, n).astype(float))
    local.set_copurchase(torch.randn(n, local.copurchase.shape[1]))
    batch = unit.batch(small_scene, np.arange(drawn), np.random.default_rng(0), True, 4)
    grads = _per_unit_grads(copy.deepcopy(model), batch, drawn, 0, True)
    clip = 0.3
    norms = grads.norm(dim=1)
    assert (norms > clip).any()
    expected = (grads * (clip / (norms + 1e-6)).clamp(max=1.0)[:, None]).sum(0)
    work = copy.deepcopy(model)
    optimizer = torch.optim.SGD(_trained(work), lr=0.1)
    module, optimizer, criterion, _ = make_private(
        work, optimizer, _unit_loader(12, 12, torch.Generator()), DPSettings(0.0, clip, mode),
        _criterion(0, True, "mean"), torch.Generator())
    optimizer.zero_grad()
    criterion(module(*batch.inputs), batch.labels, batch.weights).backward()
    optimizer.pre_step()
    assert optimizer.expected_batch_size == 12
    got = torch.cat([p.grad.flatten() for p in _trained(work)]) * optimizer.expected_batch_size
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_shopper_is_the_default_unit_and_ew_the_default_mode():
    from fedscene.common.config import PrivacyConfig

    assert PrivacyConfig().unit == "shopper"
    assert PrivacyConfig().grad_sample_mode == "ew"
    assert DPSettings(1.0, 1.0).grad_sample_mode == "ew"
    assert TrainingConfig().batch_size > 0



class _DiracProbe:
    """A step probe with `units` extra units, each a Dirac of `norm` at one coordinate of
    the last trainable parameter; records that coordinate's update at every step."""

    def __init__(self, units: int, norm: float) -> None:
        self.extra_units, self.norm, self.seen = units, norm, []

    def gradients(self, sampled, params):
        rows = [torch.zeros((len(sampled), *p.shape)) for _, p in params]
        for slot in range(len(sampled)):
            rows[-1][slot].view(-1)[sampled[slot]] = self.norm
        return rows

    def observe(self, params, batch_size):
        self.seen.append(params[-1][1].grad.view(-1)[:self.extra_units].numpy() * batch_size)


@pytest.mark.parametrize("mode", ["hooks", "ew"])
def test_probe_units_are_sampled_clipped_and_noised_with_the_scene_s(small_scene,
                                                                      small_model_config, mode):
    """A step probe's units (the empirical audit's gradient canaries) go through Opacus's
    own clipping: with no noise and a learning rate too small to move the model, each
    extra unit's update over the call is exactly the clipping norm times the times it was
    sampled, never its own norm of 50."""
    def run(norm: float) -> np.ndarray:
        torch.manual_seed(0)
        model = SceneModel(small_model_config, small_scene.n_items)
        probe = _DiracProbe(6, norm)
        train_local(model, small_scene, 4, TrainingConfig(learning_rate=1e-12, batch_size=8),
                    epochs=1.0, unit=ShopperUnit(), randomness=reproducible_source(1),
                    dp=DPSettings(0.0, 1.0, mode), probe=probe)
        return np.array(probe.seen).sum(axis=0)

    added = run(50.0) - run(0.0)  # the same steps, samples and data gradients
    sampled = np.round(added)
    assert np.allclose(added, sampled, atol=1e-4) and sampled.max() >= 1
    assert sampled.max() < 50
