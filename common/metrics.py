"""Ranking metrics per user, sampled and full-catalogue, and bootstrap intervals."""

from __future__ import annotations

import numpy as np

SAMPLED = ("hr@10", "ndcg@10", "auc")
FULL = ("full-hr@10", "full-ndcg@10", "full-recall@20")
METRICS = SAMPLED + FULL
# The metric reports lead with: rank against the whole catalogue (sampled negatives can order
# models differently, Krichene & Rendle 2020), hit of any item of the held-out basket.
PRIMARY = "full-hr@10"


def example_metrics(logits: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Sampled metrics of rows whose column 0 is the positive and the rest sampled
    negatives. Ties count against the positive, so a constant scorer gets no credit."""
    positive = logits[:, :1]
    negatives = logits[:, 1:]
    above = (negatives > positive).sum(1)
    ties = (negatives == positive).sum(1)
    rank = above + ties  # 0-based, pessimistic
    hit = rank < k
    ndcg = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    auc = ((negatives < positive).sum(1) + 0.5 * ties) / negatives.shape[1]
    return {"hr@10": hit.astype(float), "ndcg@10": ndcg, "auc": auc}


_DISCOUNT = 1.0 / np.log2(np.arange(2, 22))


def full_ranking_metrics(scores: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """One user's full-catalogue metrics: `scores` over the items that may be recommended
    (seen items already -inf), `relevant` marks the held-out basket. Ties are broken against
    the relevant items, so a constant scorer gets no credit."""
    order = np.lexsort((relevant, -scores))[:20]
    hits = relevant[order].astype(float)
    wanted = int(relevant.sum())
    ideal = _DISCOUNT[: min(wanted, 10)].sum()
    return {"full-hr@10": float(hits[:10].any()),
            "full-ndcg@10": float((hits[:10] * _DISCOUNT[: len(hits[:10])]).sum() / ideal),
            "full-recall@20": float(hits.sum() / min(wanted, 20))}


def bootstrap_ci(values: np.ndarray, samples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean over resampled users."""
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(samples, len(values)))
    means = values[draws].mean(1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def summarize(per_user_values: dict[str, np.ndarray], samples: int = 1000, seed: int = 0
              ) -> dict[str, dict[str, float]]:
    """{metric: {mean, low, high}} over users."""
    out = {}
    for name, values in per_user_values.items():
        low, high = bootstrap_ci(values, samples, seed)
        out[name] = {"mean": float(values.mean()) if len(values) else float("nan"),
                     "low": low, "high": high}
    return out
