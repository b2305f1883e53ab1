"""Recall and latency figures as every benchmark reports them: recall@10 of a top 10 against
the exact one, and percentiles of milliseconds."""

import numpy as np


def percentile(values, q) -> float:
    return round(float(np.percentile(values, q)), 2)


def recall_of(found, truth) -> float:
    """The share of the exact top results that a search found."""
    return len(set(found) & set(truth)) / len(truth)


def recall_and_latency(recalls: list[float], latencies_ms: list[float]) -> dict:
    return {
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "p50_ms": percentile(latencies_ms, 50),
        "p95_ms": percentile(latencies_ms, 95),
    }
