"""The shared feature space: what every platform can compute without coordination.

Product text becomes hashed word tokens and, from them, a TF-IDF vector fitted on the
scene's own catalogue. The shared encoder reads it through one fixed random projection (the
same matrix on every machine, from a published seed), so every scene's item vectors live in
one space; the content-similarity score is the exact TF-IDF cosine between a shopper's
history and an item, computed here from the sparse vectors.
Price becomes a log-scale bucket, category a hashed bucket. All of it is computed from the
public catalogue alone: no interaction enters it, and it costs no privacy budget. No
platform-specific ids enter this space, so an encoder trained on it transfers.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

import numpy as np
from scipy import sparse

from fedscene.common.config import ModelConfig

# What every ledger entry declares public: read without DP, at no cost, and why.
PUBLIC_INPUTS = (
    "treated as public, read without DP at no cost: the scene's catalogue (item titles as "
    "TF-IDF fitted on the catalogue and projected with a published seed, price and "
    "category buckets, item ids) and the windows' end date (data.as_of); no interaction "
    "enters these features. One exception, declared: a catalogue built from the data is "
    "the set of items the scene's shoppers bought, so a shopper who alone bought an item "
    "changes it (README, known limits); a live platform's catalogue is its product "
    "listing")

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


def tfidf(tokens: np.ndarray, buckets: int) -> sparse.csr_matrix:
    """[N, buckets] L2-normalised TF-IDF rows of N catalogue items given as hashed title
    tokens [N, T] (0 = none); idf = ln((1 + N) / (1 + df)) + 1, fitted on these N items
    alone. It reads titles only, so it is public and costs no privacy budget."""
    present = tokens > 0
    rows = np.repeat(np.arange(len(tokens)), present.sum(1))
    counts = sparse.csr_matrix((np.ones(int(present.sum())), (rows, tokens[present])),
                               shape=(len(tokens), buckets))
    counts.sum_duplicates()
    df = np.bincount(counts.indices, minlength=buckets)
    idf = np.log((1.0 + len(tokens)) / (1.0 + df)) + 1.0
    weighted = counts.multiply(idf[None, :]).tocsr()
    return _unit_rows(weighted)


def _unit_rows(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(1))).ravel()
    return (sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix).tocsr()


def text_vectors(item_tfidf: sparse.csr_matrix, config: ModelConfig) -> np.ndarray:
    """[N, text_dim] unit vectors: the items' TF-IDF rows through the fixed projection, so
    that every scene's items live in one space the shared encoder can read."""
    vectors = np.asarray(item_tfidf @ _projection(config.hash_buckets, config.text_dim))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _profiles(item_tfidf: sparse.csr_matrix, history: np.ndarray) -> sparse.csr_matrix:
    """[B, buckets] unit-length sums of the TF-IDF rows of each of B histories [B, L]
    (negative ids are padding); an empty history has an all-zero profile."""
    present = history >= 0
    rows = np.repeat(np.arange(len(history)), present.sum(1))
    chosen = sparse.csr_matrix((np.ones(len(rows)), (rows, history[present])),
                               shape=(len(history), item_tfidf.shape[0]))
    return _unit_rows(chosen @ item_tfidf)


def catalogue_content(item_tfidf: sparse.csr_matrix, history: np.ndarray, items: np.ndarray,
                      dtype: type = np.float32) -> np.ndarray:
    """[B, N] exact TF-IDF cosine between each of B histories [B, L] (their summed item
    rows) and each of N catalogue items: the content-similarity score, read from public
    titles and the shopper's own history alone (float32 for the model; the baseline asks
    float64, so that only exact ties are broken at random)."""
    return np.asarray((_profiles(item_tfidf, history) @ item_tfidf[items].T).todense(),
                      dtype=dtype)


def candidate_content(item_tfidf: sparse.csr_matrix, history: np.ndarray,
                      candidates: np.ndarray) -> np.ndarray:
    """[..., K] the same cosine for each row's own K candidates, histories [..., L]."""
    if candidates.min(initial=0) < 0:
        raise ValueError("candidates must be item ids; padding (negative ids) is only for "
                         "histories")
    flat = candidates.reshape(-1, candidates.shape[-1])
    unique, position = np.unique(flat, return_inverse=True)
    profiles = _profiles(item_tfidf, history.reshape(-1, history.shape[-1]))
    dense = np.asarray((profiles @ item_tfidf[unique].T).todense(), dtype=np.float32)
    return np.take_along_axis(dense, position.reshape(flat.shape), axis=1
                              ).reshape(candidates.shape)
