"""Synthetic scenes with a known amount of shared preference structure.

Items belong to latent topics and their text is drawn from the topic's vocabulary, so the
shared encoder can learn from text alone. Users of every scene belong to taste clusters;
a cluster's topic affinity is `(1 - shift) * shared + shift * scene-specific`, and in each
scene a `shift` fraction of items serves a re-drawn topic, so `shift=0` gives identical
scenes and `shift=1` unrelated ones (neither tastes nor what text means carry over).
`signal=0` makes choices uniform; `text_signal=0` gives titles of random words, so only
interactions (and price and category) say what an item is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedscene.common.config import SyntheticConfig
from fedscene.common.data.contract import RawDataset

CLUSTERS = 4
RANDOM_WORDS = 400  # the vocabulary of title words unrelated to any topic


def _items(config: SyntheticConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    topics = rng.integers(0, config.num_topics, size=config.num_items)
    words_per_topic = 12
    texts = []
    for topic in topics:
        words = rng.choice(words_per_topic, size=4, replace=False)
        noise = rng.random(4) >= config.text_signal  # such a word says nothing of the topic
        shuffled = rng.choice(RANDOM_WORDS, size=4, replace=False)
        texts.append(" ".join(f"r{r}" if random else f"t{topic}w{w}"
                              for w, r, random in zip(words, shuffled, noise, strict=True)))
    prices = np.round(np.exp(rng.normal(1.0 + 0.2 * topics, 0.3)), 2)
    items = pd.DataFrame({
        "item": [f"i{i:05d}" for i in range(config.num_items)],
        "text": texts,
        "category": [f"c{t}" for t in topics],
        "price": prices,
    })
    return items, topics


def generate_synthetic(config: SyntheticConfig) -> RawDataset:
    """Generate `num_scenes` scenes of implicit feedback, deterministic per seed."""
    rng = np.random.default_rng(config.seed)
    items, topics = _items(config, rng)
    shared = rng.normal(0.0, 1.0, size=(CLUSTERS, config.num_topics))
    popularity = rng.normal(0.0, 0.5, size=config.num_items)
    start = np.datetime64("2024-01-01T00:00:00")
    frames = []
    for s in range(config.num_scenes):
        own = rng.normal(0.0, 1.0, size=(CLUSTERS, config.num_topics))
        affinity = (1.0 - config.shift) * shared + config.shift * own
        # A `shift` fraction of items serve another topic in this scene than their text says,
        # so at shift 1 neither preferences nor item meaning carry over between scenes.
        served = np.where(rng.random(config.num_items) < config.shift,
                          rng.integers(0, config.num_topics, size=config.num_items), topics)
        catalogue = np.sort(rng.choice(config.num_items, size=config.items_per_scene,
                                       replace=False))
        # 3.0 sharpens preferences enough for a few interactions per user to reveal them.
        logits = 3.0 * config.signal * affinity[:, served[catalogue]] + (
            config.signal * popularity[catalogue])
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        n = min(config.interactions_per_user, config.items_per_scene // 2)
        for u in range(config.users_per_scene):
            cluster = rng.integers(CLUSTERS)
            chosen = rng.choice(catalogue, size=n, replace=False, p=probs[cluster])
            offsets = np.sort(rng.integers(0, 365 * 24 * 3600, size=n))
            frames.append(pd.DataFrame({
                "user": f"s{s}u{u}",
                "item": items["item"].to_numpy()[chosen],
                "time": start + offsets.astype("timedelta64[s]"),
                "scene": f"scene{s}",
            }))
    interactions = pd.concat(frames, ignore_index=True)
    return RawDataset(interactions=interactions, items=items,
                      origin=f"synthetic(shift={config.shift}, signal={config.signal})")
