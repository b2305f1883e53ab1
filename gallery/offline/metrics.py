"""Retrieval metrics over one ranked list of ids and the set of ids relevant to the query.

Conventions: a ranking may be shorter than k (missing places count as misses); a query with
no relevant item scores 0 on every metric and is reported separately by the caller; relevant
items that the ranking never returns count against recall and average precision.
"""

import math
from collections.abc import Sequence

# The 11 standard recall levels of an interpolated precision-recall curve.
RECALL_LEVELS = tuple(step / 10 for step in range(11))


def precision_at_k(ranking: Sequence, relevant: set, k: int) -> float:
    if k <= 0:
        raise ValueError("k must be positive")
    return sum(1 for item in ranking[:k] if item in relevant) / k


def recall_at_k(ranking: Sequence, relevant: set, k: int) -> float:
    if not relevant:
        return 0.0
    return sum(1 for item in ranking[:k] if item in relevant) / len(relevant)


def average_precision(ranking: Sequence, relevant: set) -> float:
    """Mean of precision at each relevant hit, over all relevant items (missed ones add 0)."""
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for rank, item in enumerate(ranking, start=1):
        if item in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


def ndcg_at_k(ranking: Sequence, relevant: set, k: int) -> float:
    """Binary-relevance nDCG: DCG of the ranking over DCG of a perfect one."""
    if not relevant:
        return 0.0
    dcg = sum(
        1 / math.log2(rank + 1)
        for rank, item in enumerate(ranking[:k], start=1)
        if item in relevant
    )
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def reciprocal_rank(ranking: Sequence, relevant: set) -> float:
    for rank, item in enumerate(ranking, start=1):
        if item in relevant:
            return 1 / rank
    return 0.0


def precision_recall_curve(ranking: Sequence, relevant: set) -> tuple[list[float], list[float]]:
    """Precision and recall after each rank of the ranking."""
    precisions, recalls, hits = [], [], 0
    for rank, item in enumerate(ranking, start=1):
        hits += item in relevant
        precisions.append(hits / rank)
        recalls.append(hits / len(relevant) if relevant else 0.0)
    return precisions, recalls


def best_f1_threshold(scores: Sequence[float], relevant: Sequence[bool]) -> tuple[float, float]:
    """The score threshold (keep scores >= it) with the best F1, and that F1."""
    total = sum(relevant)
    if not total:
        return 1.0, 0.0
    best_threshold, best_f1, hits = 1.0, 0.0, 0
    ordered = sorted(zip(scores, relevant, strict=True), key=lambda pair: -pair[0])
    for kept, (score, is_relevant) in enumerate(ordered, start=1):
        hits += is_relevant
        f1 = 2 * hits / (kept + total)  # 2PR/(P+R) with P = hits/kept, R = hits/total
        if f1 > best_f1:
            best_threshold, best_f1 = score, f1
    return best_threshold, best_f1


def query_metrics(ranking: Sequence, relevant: set, ks: Sequence[int]) -> dict[str, float]:
    metrics = {}
    for k in ks:
        metrics[f"P@{k}"] = precision_at_k(ranking, relevant, k)
        metrics[f"R@{k}"] = recall_at_k(ranking, relevant, k)
    metrics["AP"] = average_precision(ranking, relevant)
    metrics["nDCG@10"] = ndcg_at_k(ranking, relevant, 10)
    metrics["MRR"] = reciprocal_rank(ranking, relevant)
    return metrics


def mean_metrics(per_query: list[dict[str, float]]) -> dict[str, float]:
    if not per_query:
        return {}
    return {name: sum(q[name] for q in per_query) / len(per_query) for name in per_query[0]}
