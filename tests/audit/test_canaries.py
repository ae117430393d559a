import numpy as np
import torch
from torch import nn

from fedscene.audit.canaries import GradientCanaries, ShopperCanaries
from fedscene.common.privacy_units import ExampleUnit, ShopperUnit, shopper_rows
from fedscene.common.randomness import reproducible_source


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def test_gradient_canaries_are_diracs_of_the_sampled_included_shoppers():
    model = _model()
    canaries = GradientCanaries.draw(model, 20, units_per_canary=1, norm=10.0,
                                     rng=np.random.default_rng(0))
    assert len(set(canaries.coordinates)) == 20
    assert canaries.extra_units == canaries.included.sum()
    named = list(model.named_parameters())
    sampled = np.array([0, canaries.extra_units - 1])
    rows = canaries.gradients(sampled, named)
    assert [r.shape[1:] for r in rows] == [p.shape for _, p in named]
    flat = torch.cat([r.reshape(2, -1) for r in rows], dim=1)
    assert torch.equal(flat.norm(dim=1), torch.tensor([10.0, 10.0]))  # one coordinate each
    for slot, unit in enumerate(sampled):
        name, index = canaries.coordinates[canaries.unit_canary[unit]]
        position = [n for n, _ in named].index(name)
        assert rows[position][slot].reshape(-1)[index] == 10.0


def test_a_canary_shopper_is_as_many_units_as_the_unit_says():
    assert ShopperUnit().units_of_shopper(12) == 1 and ExampleUnit().units_of_shopper(12) == 12
    canaries = GradientCanaries.draw(_model(), 10, units_per_canary=12, norm=1.0,
                                     rng=np.random.default_rng(1))
    assert canaries.extra_units == 12 * canaries.included.sum()


def test_replayed_noise_is_used_only_when_it_explains_the_updates():
    model = _model()
    named = list(model.named_parameters())
    canaries = GradientCanaries.draw(model, 8, 1, 1.0, np.random.default_rng(2))
    # The update was the noise of seed 5 (std 3) alone; the adversary replays seed 5.
    source = reproducible_source(5).noise
    for _, param in named:
        param.grad = torch.normal(0.0, 3.0, size=param.shape, generator=source)
    canaries.replay_seed(5)
    canaries.observe(named, batch_size=1.0)
    scores, explained = canaries.scores(noise_std=3.0, clip=1.0, sample_rate=0.1)
    # Less the replayed noise nothing is left: every canary scores as absent.
    absent = np.log(0.9 + 0.1 * np.exp(-0.5 / 9.0))
    assert explained and np.allclose(scores, absent, atol=1e-6)
    other = GradientCanaries.draw(model, 8, 1, 1.0, np.random.default_rng(2))
    other.replay_seed(6)  # a seed it does not know the noise came from
    other.observe(named, batch_size=1.0)
    scores, explained = other.scores(noise_std=3.0, clip=1.0, sample_rate=0.1)
    assert not explained and not np.allclose(scores, absent, atol=1e-3)


def test_a_canary_that_stands_out_in_one_step_outscores_one_spread_over_all():
    model = _model()
    canaries = GradientCanaries.draw(model, 2, 1, 1.0, np.random.default_rng(4))
    named = list(model.named_parameters())
    index = {name: i for i, (name, _) in enumerate(named)}
    for step in range(10):
        for _, param in named:
            param.grad = torch.zeros_like(param)
        for canary, (name, flat) in enumerate(canaries.coordinates):
            # Both sum to 1 over the steps: canary 0 all at once, canary 1 a tenth a step.
            value = (1.0 if step == 0 else 0.0) if canary == 0 else 0.1
            named[index[name]][1].grad.view(-1)[flat] = value
        canaries.observe(named, batch_size=1.0)
    scores, _ = canaries.scores(noise_std=0.3, clip=1.0, sample_rate=0.1)
    assert scores[0] > scores[1]


def test_canary_shoppers_join_the_scene_as_new_shoppers(small_scene):
    canaries = ShopperCanaries.draw(small_scene, 30, examples=4, rng=np.random.default_rng(3))
    time = small_scene.train_time.max()
    audited = canaries.add_to(small_scene, time)
    included = int(canaries.included.sum())
    assert len(shopper_rows(audited)) == len(shopper_rows(small_scene)) + included
    assert audited.n_train == small_scene.n_train + 4 * included
    new = audited.train_user >= small_scene.n_users
    assert set(np.bincount(audited.train_user[new] - small_scene.n_users)) == {4}
    assert (audited.train_time[new] == time).all()
    assert all(not np.isin(t, h).any() for t, h in zip(canaries.targets, canaries.histories,
                                                       strict=True))
