"""The shared feature space: what every platform can compute without coordination.

Product text becomes hashed word tokens and, from them, a TF-IDF vector fitted on the
scene's own catalogue and mapped through one fixed random projection (the same matrix on
every machine, from a published seed), so every scene's item vectors live in one space.
Price becomes a log-scale bucket, category a hashed bucket. All of it is computed from the
public catalogue alone: no interaction enters it, and it costs no privacy budget. No
platform-specific ids enter this space, so an encoder trained on it transfers.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

import numpy as np

from fedscene.common.config import ModelConfig

_WORD = re.compile(r"[a-z0-9]+")
PRICE_LOW, PRICE_HIGH = 0.1, 1000.0


def stable_hash(text: str, buckets: int) -> int:
    """A bucket in [1, buckets) that is the same on every machine (0 is padding)."""
    return zlib.crc32(text.encode("utf-8")) % (buckets - 1) + 1


def text_tokens(texts: list[str], config: ModelConfig) -> np.ndarray:
    """Hashed word tokens, left-aligned and zero-padded to `max_tokens` per text."""
    out = np.zeros((len(texts), config.max_tokens), dtype=np.int64)
    for row, text in enumerate(texts):
        words = _WORD.findall(text.lower())[: config.max_tokens]
        out[row, : len(words)] = [stable_hash(word, config.hash_buckets) for word in words]
    return out


def price_buckets(prices: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Log-spaced buckets between 0.1 and 1000 (fixed edges, so every scene agrees)."""
    edges = np.geomspace(PRICE_LOW, PRICE_HIGH, config.price_buckets - 1)
    return np.digitize(np.asarray(prices, dtype=float), edges).astype(np.int64)


def category_buckets(categories: list[str], config: ModelConfig) -> np.ndarray:
    """Hashed category, 0 when the category is unknown."""
    return np.array([stable_hash(c.strip().lower(), config.category_buckets) if c.strip() else 0
                     for c in categories], dtype=np.int64)


PROJECTION_SEED = 20121201  # public: every scene must draw the same projection


@lru_cache(maxsize=4)
def _projection(buckets: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(PROJECTION_SEED)
    return (rng.standard_normal((buckets, dim)) / np.sqrt(dim)).astype(np.float32)


def text_vectors(tokens: np.ndarray, config: ModelConfig) -> np.ndarray:
    """[N, text_dim] unit vectors: TF-IDF of each item's hashed title words (idf fitted on
    these N catalogue items) through the fixed projection. Dot products approximate the
    TF-IDF cosine (Johnson-Lindenstrauss), so the mean of a history's vectors against an
    item's is the content-similarity score, computed from the catalogue alone."""
    present = tokens > 0
    df = np.bincount(np.unique(np.stack([np.repeat(np.arange(len(tokens)), present.sum(1)),
                                         tokens[present]]), axis=1)[1],
                     minlength=config.hash_buckets)
    idf = np.log((1.0 + len(tokens)) / (1.0 + df)) + 1.0
    weights = np.where(present, idf[tokens], 0.0)
    weights /= np.maximum(np.sqrt((weights ** 2).sum(1, keepdims=True)), 1e-12)
    vectors = np.einsum("nt,ntd->nd", weights, _projection(config.hash_buckets,
                                                           config.text_dim)[tokens])
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
