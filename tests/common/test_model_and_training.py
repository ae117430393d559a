from dataclasses import replace

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator

from fedscene.common.algorithms import shared_prefixes
from fedscene.common.batches import gather_inputs, history_inputs, item_inputs
from fedscene.common.config import TrainingConfig
from fedscene.common.data import build_scene, load_raw_dataset
from fedscene.common.evaluation import evaluate_users, model_scorer
from fedscene.common.features import catalogue_content
from fedscene.common.model import (
    SceneModel,
    merge_state,
    split_state,
)
from fedscene.common.privacy_units import ShopperUnit
from fedscene.common.training import DPSettings, train_local
from tests.conftest import seeded_training as _run
from tests.conftest import synthetic_data


def test_model_passes_opacus_validator(small_model_config):
    assert ModuleValidator.validate(SceneModel(small_model_config, 50), strict=False) == []


def test_state_split_by_algorithm(small_model_config):
    state = SceneModel(small_model_config, 50).state_dict()
    shared, local = split_state(state, shared_prefixes("fedper"))
    assert shared and all(n.startswith("encoder.") for n in shared)
    assert all(n.startswith("head.") for n in local)
    shared, local = split_state(state, shared_prefixes("fedavg"))
    assert list(local) == ["head.local_ids.prior_counts", "head.local_ids.prior",
                           "head.local_ids.copurchase",
                           "head.local_ids.bias.weight"]  # never sent
    assert split_state(state, shared_prefixes("local"))[0] == {}
    assert sorted(merge_state(shared, local)) == sorted(state)
    with pytest.raises(ValueError, match="more than one"):
        merge_state(shared, shared)


def _fit_auc(signal: float, model_config, private: bool = False, unit=None) -> float:
    data = synthetic_data(num_scenes=1, users_per_scene=150, signal=signal, shift=0.0)
    scene = build_scene(load_raw_dataset(data), "scene0", data, model_config)
    model = SceneModel(model_config, scene.n_items)
    training = TrainingConfig(batch_size=64, learning_rate=0.5)
    dp = DPSettings(noise_multiplier=0.8, max_grad_norm=1.0) if private else None
    for round_ in range(4):
        train_local(model, scene, 4, training, epochs=1,
                    dp=dp, **_run(round_, unit))
    return float(evaluate_users(scene, model_scorer(model))["auc"].mean())


def test_learns_with_signal_and_not_without(small_model_config):
    assert _fit_auc(1.0, small_model_config) > 0.7
    assert abs(_fit_auc(0.0, small_model_config) - 0.5) < 0.06


def test_dp_training_learns(small_model_config):
    assert _fit_auc(1.0, small_model_config, private=True) > 0.62


def test_shopper_level_dp_training_learns(small_model_config):
    unit = ShopperUnit(max_examples=8)
    assert _fit_auc(1.0, small_model_config, private=True, unit=unit) > 0.6


def test_trainable_prefixes_freeze_the_rest(small_scene, small_model_config):
    model = SceneModel(small_model_config, small_scene.n_items)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_local(model, small_scene, 4, TrainingConfig(),
                epochs=1, trainable=("head.",), dp=DPSettings(1.0, 1.0), **_run(0))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


def test_poisson_empty_batches_still_step(small_scene, small_model_config):
    tiny = TrainingConfig(batch_size=1)  # sample rate 1/n: many empty Poisson batches
    model = SceneModel(small_model_config, small_scene.n_items)
    before = model.encoder.user_mlp.weight.clone()
    report = train_local(model, small_scene, 4, tiny,
                         epochs=0.02, dp=DPSettings(1.0, 1.0), **_run(3))
    assert report.steps == round(0.02 * small_scene.n_train)
    assert not torch.equal(before, model.encoder.user_mlp.weight)
    assert np.isfinite(model.encoder.user_mlp.weight.detach().numpy()).all()


def test_public_item_vectors_read_no_interactions(small_model_config):
    """Item vectors come from the catalogue alone: reshuffling who bought what, and when,
    leaves every item's vector as it was."""
    data = synthetic_data()
    raw = load_raw_dataset(data)
    shuffled = raw.interactions.copy()
    rng = np.random.default_rng(0)
    shuffled["user"] = rng.permutation(shuffled["user"].to_numpy())
    shuffled["time"] = rng.permutation(shuffled["time"].to_numpy())
    before = build_scene(raw, "scene0", data, small_model_config)
    after = build_scene(replace(raw, interactions=shuffled), "scene0", data, small_model_config)
    np.testing.assert_array_equal(before.item_keys, after.item_keys)
    np.testing.assert_array_equal(before.item_text, after.item_text)
    assert (before.item_tfidf != after.item_tfidf).nnz == 0
    assert not np.array_equal(before.train_user, after.train_user)


def test_an_untrained_model_ranks_by_content_similarity(small_scene, small_model_config):
    """The head's correction layer starts at zero and the item biases at zero, so before
    any training the scores are the content weight times the public title cosine."""
    model = SceneModel(small_model_config, small_scene.n_items)
    rows = np.arange(8)
    history = history_inputs(small_scene, small_scene.test_history[rows])
    catalogue = item_inputs(small_scene, small_scene.ranked_items)
    content = catalogue_content(small_scene.item_tfidf, small_scene.test_history[rows],
                                small_scene.ranked_items)
    with torch.no_grad():
        scores = model.catalogue_scores(history, catalogue, torch.from_numpy(content))
    expected = small_model_config.content_weight * content
    torch.testing.assert_close(scores, torch.from_numpy(expected))


def test_training_inputs_and_catalogue_scoring_give_the_same_logits(small_scene,
                                                                    small_model_config):
    """What training scores (`gather_inputs` -> forward) and what evaluation scores
    (`catalogue_scores` with `catalogue_content`) agree item for item, content term,
    corrections, item biases and the co-purchase affinity to the history included."""
    torch.manual_seed(0)
    model = SceneModel(small_model_config, small_scene.n_items).eval()
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
        factors = model.head.local_ids.copurchase
        model.head.local_ids.set_copurchase(torch.randn_like(factors))
    rows = np.arange(6)
    histories = small_scene.test_history[rows]
    candidates = np.random.default_rng(1).integers(0, small_scene.n_items, size=(6, 7))
    content = catalogue_content(small_scene.item_tfidf, histories, small_scene.ranked_items)
    with torch.no_grad():
        trained = model(*gather_inputs(small_scene, candidates, histories))
        ranked = model.catalogue_scores(history_inputs(small_scene, histories),
                                        item_inputs(small_scene, small_scene.ranked_items),
                                        torch.from_numpy(content))
    torch.testing.assert_close(trained, torch.gather(ranked, 1, torch.from_numpy(candidates)),
                               rtol=1e-5, atol=1e-5)
