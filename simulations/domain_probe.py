"""How well can scenes be told apart from a shared encoder's vectors? (alignment diagnostic)

Domain-adversarial alignment claims to make scenes' representations indistinguishable. This
measures it after the fact and outside the federation: a fresh linear classifier (multinomial
logistic regression) is fit on half of the encoder's vectors, labelled by scene, and its
accuracy on the other half is reported next to chance (1 / scenes). Each scene contributes
the same number of vectors, so chance is exact. Users are encoded from their test-time
histories and items from the scene's catalogue; no labels or test targets are used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedscene.common.algorithms import ENCODER
from fedscene.common.batches import history_inputs
from fedscene.common.config import ExperimentConfig
from fedscene.common.data import SceneDataset
from fedscene.common.data.scene import PAD
from fedscene.common.model import SceneModel

MAX_PER_SCENE = 300


def _vectors(model: SceneModel, dataset: SceneDataset) -> dict[str, np.ndarray]:
    """The encoder's user vectors (one per test example) and item vectors (catalogue)."""
    items = np.arange(dataset.n_items)[:, None]
    candidates = np.zeros((len(dataset.test_history), 1), dtype=np.int64)
    no_history = np.full((len(items), 1), PAD, dtype=np.int64)
    with torch.no_grad():  # the encoder alone: no content scores, no head
        with_history = np.concatenate([candidates, dataset.test_history], axis=1)
        users, _ = model.encoder(*history_inputs(dataset, with_history)[:4], n_candidates=1)
        alone = np.concatenate([items, no_history], axis=1)
        _, catalogue = model.encoder(*history_inputs(dataset, alone)[:4], n_candidates=1)
    return {"users": users.numpy(), "items": catalogue[:, 0].numpy()}


def _held_out_accuracy(features: list[np.ndarray], seed: int) -> float:
    """Fit on a random half of each scene's vectors, score the other half."""
    rng = np.random.default_rng(seed)
    count = min(MAX_PER_SCENE, *(len(f) for f in features))
    train_x, train_y, test_x, test_y = [], [], [], []
    for label, values in enumerate(features):
        chosen = values[rng.permutation(len(values))[:count]]
        half = count // 2
        train_x.append(chosen[:half])
        test_x.append(chosen[half:])
        train_y += [label] * half
        test_y += [label] * (count - half)
    x = torch.from_numpy(np.concatenate(train_x)).float()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    y = torch.tensor(train_y)
    torch.manual_seed(seed)
    classifier = torch.nn.Linear(x.shape[1], len(features))
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(classifier(x), y)
        loss = loss + 1e-3 * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        test = (torch.from_numpy(np.concatenate(test_x)).float() - mean) / std
        predicted = classifier(test).argmax(1).numpy()
    return float((predicted == np.array(test_y)).mean())


def domain_separability(config: ExperimentConfig, datasets: list[SceneDataset],
                        shared: dict[str, torch.Tensor], seed: int = 0) -> dict[str, Any]:
    """Held-out scene-classification accuracy from the encoder in `shared`, for user and
    item vectors, with chance (1 / scenes). Lower is better aligned."""
    model = SceneModel(config.model, 1)
    model.load_state_dict({k: v for k, v in shared.items() if k.startswith(ENCODER)},
                          strict=False)
    model.eval()
    per_scene = [_vectors(model, d) for d in datasets]
    out: dict[str, Any] = {"scenes": [d.scene for d in datasets],
                           "chance": 1.0 / len(datasets)}
    for kind in ("users", "items"):
        out[kind] = _held_out_accuracy([v[kind] for v in per_scene], seed)
    return out
