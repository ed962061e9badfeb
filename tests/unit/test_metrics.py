import math

import numpy as np
import pytest

from model_lib.evaluation.metrics import evaluate_holdout, metrics_from_ranks, seen_items, suggest_policy, target_ranks
from model_lib.ranking import ALLOW_REPEATS, RepeatPolicy, top_k, top_k_items


def seen_mask(items, older, num_items):
    return seen_items(np.asarray(items), older, num_items)


def test_rank_counts_only_unseen_candidates_above_the_target():
    scores = np.array([[9.0, 9.0, 5.0, 4.0, 3.0, 8.0]])  # indices 0/1 are padding/unknown: never candidates
    excluded = seen_mask(np.array([[0, 5]]), [np.array([], int)], 6)
    assert target_ranks(scores, np.array([3]), excluded)[0] == 2.0  # only item 2 (5.0) beats 4.0; 5 is seen


def test_a_seen_target_is_a_miss_under_exclude_seen_and_ranked_under_allow_repeats():
    scores = np.array([[0.0, 0.0, 1.0, 2.0]])
    history = np.array([[3, 2]])
    excluded = RepeatPolicy().mask(history, np.ones_like(history), [np.array([], int)], 4)
    assert math.isinf(target_ranks(scores, np.array([2]), excluded)[0])  # the served list could never hold it
    candidates = RepeatPolicy(ALLOW_REPEATS).mask(history, np.ones_like(history), [np.array([], int)], 4)
    assert target_ranks(scores, np.array([2]), candidates)[0] == 2.0  # item 3 (2.0) is a candidate above it


def test_the_repurchase_leak_is_gone():
    """The old protocol excluded seen items except the target: on re-purchase data the target was then the only
    seen item left, so a scorer that favours the user's own items looked perfect while the served list (which
    excludes every seen item) could never contain it."""
    history = np.array([[2, 3, 4], [5, 6, 7]])
    targets = np.array([3, 6])  # both re-purchases
    inputs = {"items": history, "event_types": np.ones_like(history)}
    older = [np.array([], int)] * 2

    def own_items_first(batch):
        scores = np.zeros((len(batch["items"]), 10))
        np.put_along_axis(scores, batch["items"], 1.0, axis=1)
        return scores

    excluded = evaluate_holdout(own_items_first, inputs, older, targets, 10, ks=(1, 3))
    assert excluded["hr_3"] == 0.0 and excluded["repeat_target_share"] == 1.0
    allowed = evaluate_holdout(
        own_items_first, inputs, older, targets, 10, ks=(1, 3), policy=RepeatPolicy(ALLOW_REPEATS)
    )
    assert allowed["hr_3"] == 1.0  # three own items tie at the top: expected rank 2
    assert allowed["hr_1"] == 0.0 and allowed["mrr_3"] == 0.5
    assert suggest_policy(excluded["repeat_target_share"]) == ALLOW_REPEATS


def test_repeatable_event_types_keep_only_those_items_candidates():
    history = np.array([[2, 3, 4]])
    types = np.array([[1, 4, 1]])  # item 3 was purchased (type 4), items 2 and 4 only viewed
    policy = RepeatPolicy("exclude_seen", (4,))
    mask = policy.mask(history, types, [np.array([5])], 7)
    assert mask[0].tolist() == [True, True, True, False, True, True, False]
    assert policy.allows_repeats and not RepeatPolicy().allows_repeats


def test_ties_count_half_so_a_constant_scorer_ranks_mid_list():
    ranks = target_ranks(np.zeros((1, 12)), np.array([5]), np.zeros((1, 12), bool))
    assert ranks[0] == 1 + 9 / 2  # 10 candidates (2..11): 9 others tie with the target


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
    inputs = {"items": np.array([[0, 5], [0, 5], [0, 5]]), "event_types": np.array([[0, 1], [0, 1], [0, 1]])}

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
        # Equal scores in item order: the same items as a stable sort of every item.
        stable = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, width)]
        np.testing.assert_array_equal(np.where(finite, items, -1), np.where(finite, stable, -1))
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
    items = np.array([[0, 3], [2, 2]])
    RepeatPolicy().exclude(scores, items, np.ones_like(items), [np.array([5]), np.zeros(0, int)])
    assert np.isneginf(scores).tolist() == [
        [True, True, False, True, False, True],
        [True, True, True, False, False, False],
    ]


def test_next_type_metrics_follow_their_written_definitions():
    from model_lib.evaluation.metrics import next_type_metrics, roc_auc

    # Three types; targets are 1-based type indices.
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    targets = np.array([1, 2, 2, 3])
    found = next_type_metrics(probabilities, targets, ["view", "cart", "purchase"])
    assert found["accuracy"] == 0.75  # the third is wrong
    assert found["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.4, 0.6])))
    # purchase: the one purchase (0.6) outranks all three others (0.1, 0.1, 0.1) -> 1.0
    assert found["auc_purchase"] == 1.0
    # cart: positives 0.8 and 0.4 vs negatives 0.2 and 0.2 -> every pair ordered right
    assert found["auc_cart"] == 1.0
    # Ties count half, and a constant scorer is 0.5 whatever the labels.
    assert roc_auc(np.array([0.3, 0.3, 0.3, 0.3]), np.array([True, False, True, False])) == 0.5
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == 0.75
    one_class = next_type_metrics(probabilities[:2], np.array([1, 1]), ["view", "cart", "purchase"])
    assert "auc_view" not in one_class and one_class["accuracy"] == 0.5


def test_next_type_baselines_learn_from_the_training_pairs_only():
    from model_lib.data.splits import HoldOut, Sequences
    from model_lib.evaluation.baselines import last_type, majority_type

    # Training pairs: a view (1) is always followed by a purchase (2); a purchase twice by a view, once by a purchase.
    types = np.array([[0, 1, 2, 1, 2, 1, 2, 2]])
    train = Sequences(np.array(["u"]), np.full((1, 8), 5), types, np.ones((1, 8), int), [np.zeros(0, int)])
    holdout_inputs = Sequences(
        np.array(["a", "b"]),
        np.full((2, 2), 5),
        np.array([[0, 1], [1, 2]]),
        np.ones((2, 2), int),
        [np.zeros(0, int)] * 2,
    )
    holdout = HoldOut(holdout_inputs, np.array([5, 5]), np.array([2, 1]))
    majority = majority_type(train, holdout, 2)
    np.testing.assert_allclose(majority, [[3 / 8, 5 / 8]] * 2)  # next types: 2 views, 4 purchases, add-one
    markov = last_type(train, holdout, 2)
    np.testing.assert_allclose(markov, [[1 / 5, 4 / 5], [3 / 5, 2 / 5]])  # rows: after a view, after a purchase


def test_the_paired_difference_compares_the_same_users_and_its_error_shrinks_with_them():
    from model_lib.evaluation.metrics import ndcg_gains, paired_difference

    ranks = np.array([1.0, 3.0, np.inf, 2.0])
    reference = np.array([2.0, 3.0, 1.0, np.inf])
    assert ndcg_gains(ranks, 10).tolist() == pytest.approx([1.0, 0.5, 0.0, 1 / np.log2(3)])
    paired = paired_difference(ranks, reference, 10)
    expected = ndcg_gains(ranks, 10) - ndcg_gains(reference, 10)
    assert paired["difference"] == pytest.approx(expected.mean())
    assert paired["stderr"] == pytest.approx(expected.std(ddof=1) / 2)
    # A scorer one place better for every user: the difference is certain however small (no error at all), where
    # the two means' own errors would overlap.
    rng = np.random.default_rng(0)
    base = rng.integers(2, 12, 500).astype(float)
    better = paired_difference(base - 1, base, 10)
    assert better["difference"] > 0 and better["difference"] > 3 * better["stderr"]
    assert paired_difference(base, base, 10) == {"difference": 0.0, "stderr": 0.0}
