import numpy as np

from fedscene.common.data.scene import PAD
from fedscene.common.features import (
    candidate_content,
    catalogue_content,
    text_vectors,
    tfidf,
)


def _dense_tfidf(tokens: np.ndarray, buckets: int) -> np.ndarray:
    """TF-IDF written out term by term, to check the sparse one against."""
    counts = np.zeros((len(tokens), buckets))
    for row, words in enumerate(tokens):
        for word in words[words > 0]:
            counts[row, word] += 1
    df = (counts > 0).sum(0)
    weighted = counts * (np.log((1 + len(tokens)) / (1 + df)) + 1)
    return weighted / np.linalg.norm(weighted, axis=1, keepdims=True)


def test_tfidf_follows_its_formula():
    tokens = np.array([[1, 2, 2, 0], [2, 3, 0, 0], [4, 5, 1, 0], [3, 3, 3, 0]])
    np.testing.assert_allclose(tfidf(tokens, 8).toarray(), _dense_tfidf(tokens, 8))


def test_content_is_the_exact_cosine_of_the_history_sum(small_scene):
    """Both content functions give cos(sum of the history's TF-IDF rows, item's row), padding
    ignored and an empty history scoring 0, and they agree with each other."""
    dense = small_scene.item_tfidf.toarray()
    history = small_scene.test_history[:6].copy()
    history[1, 1:] = PAD
    history[2, :] = PAD
    profile = np.stack([dense[h[h != PAD]].sum(0) for h in history])
    norms = np.linalg.norm(profile, axis=1, keepdims=True)
    expected = (profile / np.maximum(norms, 1e-12)) @ dense.T

    full = catalogue_content(small_scene.item_tfidf, history, small_scene.ranked_items)
    np.testing.assert_allclose(full, expected, atol=1e-6)
    assert not full[2].any()

    candidates = np.random.default_rng(0).integers(0, small_scene.n_items, size=(2, 3, 5))
    grouped = candidate_content(small_scene.item_tfidf, history.reshape(2, 3, -1), candidates)
    np.testing.assert_allclose(grouped.reshape(6, 5),
                               np.take_along_axis(expected, candidates.reshape(6, 5), axis=1),
                               atol=1e-6)


def test_projected_vectors_approximate_the_cosine(small_scene, small_model_config):
    """The encoder's projected title vectors approximate the TF-IDF cosine, only roughly at
    64 dimensions (they are what the shared encoder reads; the content term uses the exact
    cosine)."""
    vectors = text_vectors(small_scene.item_tfidf, small_model_config)
    assert vectors.shape == (small_scene.n_items, small_model_config.text_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    exact = (small_scene.item_tfidf @ small_scene.item_tfidf.T).toarray()
    projected = vectors @ vectors.T
    assert np.corrcoef(exact.ravel(), projected.ravel())[0, 1] > 0.7
