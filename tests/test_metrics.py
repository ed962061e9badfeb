import math

import numpy as np
import pytest

from model_lib.metrics import (
    evaluate_holdout,
    exclude_seen,
    metrics_from_ranks,
    seen_mask,
    target_ranks,
    top_k,
    top_k_items,
)


def test_rank_counts_only_unseen_candidates_above_the_target():
    scores = np.array([[9.0, 9.0, 5.0, 4.0, 3.0, 8.0]])  # indices 0/1 are padding/unknown: never candidates
    excluded = seen_mask(np.array([[0, 5]]), [np.array([], int)], 6)
    assert target_ranks(scores, np.array([3]), excluded)[0] == 2.0  # only item 2 (5.0) beats 4.0; 5 is seen


def test_the_target_is_never_excluded_even_if_seen():
    scores = np.array([[0.0, 0.0, 1.0, 2.0]])
    excluded = seen_mask(np.array([[3, 2]]), [np.array([], int)], 4)
    assert target_ranks(scores, np.array([2]), excluded)[0] == 1.0


def test_unknown_target_is_a_miss():
    ranks = target_ranks(np.zeros((1, 4)), np.array([1]), np.zeros((1, 4), bool))
    assert math.isinf(ranks[0])
    assert metrics_from_ranks(ranks, [10])["hr_10"] == 0.0


def test_metric_definitions():
    ranks = np.array([1.0, 3.0, 11.0, np.inf])
    m = metrics_from_ranks(ranks, [10])
    assert m["hr_10"] == 0.5
    assert math.isclose(m["ndcg_10"], (1.0 + 1.0 / math.log2(4)) / 4)
    assert math.isclose(m["mrr_10"], (1.0 + 1.0 / 3) / 4)


def test_top_k_skips_excluded_and_orders_by_score():
    scores = np.array([[0.0, 0.0, 0.1, 0.9, 0.5, 0.7]])
    excluded = seen_mask(np.array([[3]]), [np.array([4])], 6)
    assert top_k_items(scores, excluded, 2).tolist() == [[5, 2]]


def test_older_items_are_excluded_too():
    mask = seen_mask(np.array([[0, 2]]), [np.array([4])], 5)
    assert mask.tolist() == [[True, True, True, False, True]]


def test_evaluate_holdout_with_a_perfect_scorer_and_coverage():
    targets = np.array([2, 3, 4])
    inputs = {"items": np.array([[0, 5], [0, 5], [0, 5]])}

    def oracle(batch):
        scores = np.zeros((len(batch["items"]), 6))
        scores[np.arange(len(scores)), targets[: len(scores)]] = 1.0
        return scores

    result = evaluate_holdout(oracle, inputs, [np.array([], int)] * 3, targets, 6, ks=(1, 10))
    assert result["hr_1"] == 1.0 and result["ndcg_10"] == 1.0
    assert result["coverage_1"] == 3 / 4  # items 2, 3, 4 of the 4 candidates 2..5


@pytest.mark.parametrize("width", [7, 300, 5000])
def test_top_k_matches_a_full_sort_with_ties_and_exclusions(width):
    """The block pre-selection (wide catalogues) and the plain path agree with sorting every item."""
    rng = np.random.default_rng(width)
    scores = rng.integers(0, 40, size=(64, width)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[0, :] = -np.inf  # a user with nothing rankable left
    for k in (1, 5, 20, width + 3):
        items, values = top_k(scores, k)
        assert items.shape == (64, min(k, width))
        expected = -np.sort(-scores, axis=1)[:, : min(k, width)]
        np.testing.assert_array_equal(values, expected)
        np.testing.assert_array_equal(np.take_along_axis(scores, items, axis=1), values)
        finite = np.isfinite(values)
        for row in range(64):
            assert len(set(items[row][finite[row]])) == finite[row].sum()  # no item twice
        again = top_k(scores.copy(), k)
        np.testing.assert_array_equal(again[0], items)  # same input, same output


def test_top_k_items_marks_missing_positions_when_k_exceeds_the_rankable_items():
    scores = np.array([[0.0, 0.0, 0.3, 0.9, 0.5]])
    excluded = seen_mask(np.array([[3]]), [np.array([], int)], 5)
    assert top_k_items(scores, excluded, 500).tolist() == [[4, 2, -1, -1, -1]]


def test_exclude_seen_scatters_minus_infinity():
    scores = np.zeros((2, 6), np.float32)
    exclude_seen(scores, np.array([[0, 3], [2, 2]]), [np.array([5]), np.zeros(0, int)])
    assert np.isneginf(scores).tolist() == [
        [True, False, False, True, False, True],
        [False, False, True, False, False, False],
    ]
