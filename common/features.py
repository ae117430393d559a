"""The shared feature space: what every platform can compute without coordination.

Product text becomes hashed word tokens, price a log-scale bucket, category a hashed bucket.
No platform-specific ids enter this space, so an encoder trained on it transfers.
"""

from __future__ import annotations

import re
import zlib

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
