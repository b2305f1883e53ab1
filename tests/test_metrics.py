"""Retrieval metrics against hand-computed rankings and scikit-learn."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from gallery.offline import metrics

RANKING = ["a", "x", "b", "y", "c"]  # relevant a, b, c at ranks 1, 3, 5
RELEVANT = {"a", "b", "c"}


def test_precision_and_recall_at_k_by_hand():
    assert metrics.precision_at_k(RANKING, RELEVANT, 1) == 1.0
    assert metrics.precision_at_k(RANKING, RELEVANT, 3) == pytest.approx(2 / 3)
    assert metrics.recall_at_k(RANKING, RELEVANT, 3) == pytest.approx(2 / 3)
    assert metrics.recall_at_k(RANKING, RELEVANT, 5) == 1.0


def test_k_larger_than_the_ranking_counts_missing_places_as_misses():
    assert metrics.precision_at_k(["a"], {"a"}, 10) == pytest.approx(0.1)
    assert metrics.recall_at_k(["a"], {"a", "b"}, 10) == pytest.approx(0.5)
    assert metrics.ndcg_at_k(["a"], {"a"}, 10) == 1.0


def test_average_precision_by_hand_and_with_missed_items():
    assert metrics.average_precision(RANKING, RELEVANT) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # "d" is relevant but never returned: it adds 0 to the sum and counts in the divisor.
    assert metrics.average_precision(RANKING, RELEVANT | {"d"}) == pytest.approx(
        (1 + 2 / 3 + 3 / 5) / 4
    )


def test_average_precision_matches_scikit_learn_on_full_rankings():
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = rng.integers(0, 2, 40)
        if not labels.any():
            continue
        scores = rng.permutation(40).astype(float)  # distinct scores: no ties
        ranking = list(np.argsort(-scores))
        relevant = {i for i in range(40) if labels[i]}
        assert metrics.average_precision(ranking, relevant) == pytest.approx(
            average_precision_score(labels, scores)
        )


def test_ties_are_ranked_as_given():
    # Two items with the same score: the metric uses the order the search returned.
    assert metrics.reciprocal_rank(["x", "a"], {"a"}) == 0.5
    assert metrics.reciprocal_rank(["a", "x"], {"a"}) == 1.0


def test_ndcg_and_mrr_by_hand():
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(6)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg_at_k(RANKING, RELEVANT, 10) == pytest.approx(dcg / ideal)
    assert metrics.reciprocal_rank(RANKING, {"b"}) == pytest.approx(1 / 3)


def test_no_relevant_items_scores_zero_everywhere():
    scores = metrics.query_metrics(RANKING, set(), ks=[1, 5])
    assert set(scores.values()) == {0.0}


def test_empty_ranking():
    assert metrics.average_precision([], {"a"}) == 0.0
    assert metrics.precision_at_k([], {"a"}, 5) == 0.0
    assert metrics.reciprocal_rank([], {"a"}) == 0.0


def test_precision_recall_curve():
    precisions, recalls = metrics.precision_recall_curve(RANKING, RELEVANT)
    assert recalls[-1] == 1.0 and precisions[0] == 1.0
    assert precisions[2] == pytest.approx(2 / 3)


def test_best_f1_threshold_by_hand():
    # Keeping scores >= 0.7 gives P = 2/2, R = 2/3: F1 0.8; keeping all gives 6/8 = 0.75.
    threshold, f1 = metrics.best_f1_threshold(
        [0.9, 0.7, 0.5, 0.4, 0.3], [True, True, False, False, True]
    )
    assert threshold == 0.7 and f1 == pytest.approx(0.8)
    assert metrics.best_f1_threshold([0.5], [False]) == (1.0, 0.0)
