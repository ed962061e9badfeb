"""The promotion gate's sanity checks: a model that must not become champion whatever its NDCG."""

import numpy as np
import pandas as pd
import pytest

from model_lib.data.splits import HoldOut, Sequences

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def recommender():
    from model_lib.config import get_settings
    from model_lib.model.network import NextItemModel, build_model
    from model_lib.serving.recommender import Recommender

    settings = get_settings()
    keras.utils.set_random_seed(2)
    model = NextItemModel(
        12, settings.sessionize.num_event_types, settings.sessionize.num_gap_buckets, embedding_dim=4, hidden_dim=4
    )
    build_model(model)
    vocabulary = pd.DataFrame({"item_index": range(2, 12), "item_id": [f"i{k}" for k in range(2, 12)], "count": 1})
    return Recommender(model, vocabulary, settings.sessionize.event_types)


def holdout(rows: list[list[int]]) -> HoldOut:
    items = np.array(rows, np.int32)
    sequences = Sequences(
        np.array([f"u{k}" for k in range(len(rows))], dtype=object),
        items,
        (items > 0).astype(np.int32),
        (items > 0).astype(np.int32) * 3,
        [np.zeros(0, np.int64)] * len(rows),
    )
    return HoldOut(sequences, np.full(len(rows), 2))


def test_a_sane_model_passes_and_each_check_names_its_problem(recommender, settings):
    from jobs.promote import holdout_report, sanity_problems

    same_ids = np.array(["", ""] + [f"i{k}" for k in range(2, 12)], dtype=object)
    report = holdout_report(recommender, holdout([[0, 3, 4], [5, 6, 7]]), same_ids, settings)
    assert report["known_share"] == 1.0 and report["nan_score_rows"] == 0
    assert sanity_problems(report, recommender, settings) == []

    other_ids = np.array(["", ""] + [f"x{k}" for k in range(2, 12)], dtype=object)  # the day knows other items
    drifted = holdout_report(recommender, holdout([[0, 3, 4], [5, 6, 7]]), other_ids, settings)
    assert drifted["known_share"] == 0.0
    assert any("it knows 0.0% of the hold-out" in p for p in sanity_problems(drifted, recommender, settings))

    broken = {**report, "nan_score_rows": 2.0, "coverage_20": 0.001}
    problems = sanity_problems(broken, recommender, settings.updated(event_types=["view"]))
    assert [p.split()[1] for p in problems[:1]] == ["users"]
    assert any("coverage@20 0.0010 is below" in p for p in problems)
    assert any("event types" in p for p in problems)


def test_one_fit_check_names_the_floor_and_both_kinds_of_mismatch():
    from model_lib.data.vocabulary import fit_problems

    assert fit_problems(0.9, 0.5, "RECO_X", "the day's events", ["view"], ["view"]) == []
    problems = fit_problems(0.2, 0.5, "RECO_X", "the day's events", ["view"], ["view", "buy"])
    assert problems[0] == "it knows 20.0% of the day's events, below RECO_X 50%: it was trained on other items"
    assert problems[1] == "it was trained on event types ['view'], not ['view', 'buy']"


def test_the_gate_judges_at_the_settings_eval_k(recommender, settings):
    """The hold-out report has the metric the gate compares at eval_k, and a NaN there is a sanity problem."""
    from jobs.promote import gate_metric, holdout_report, sanity_problems

    at_five = settings.updated(eval_k=5)
    assert (gate_metric(at_five).key, gate_metric(at_five).label) == ("ndcg_5", "NDCG@5")
    same_ids = np.array(["", ""] + [f"i{k}" for k in range(2, 12)], dtype=object)
    report = holdout_report(recommender, holdout([[0, 3, 4], [5, 6, 7]]), same_ids, at_five)
    assert "ndcg_5" in report and "ndcg_10" not in report and "coverage_20" in report
    assert sanity_problems({**report, "ndcg_5": float("nan")}, recommender, at_five) == ["0 users got NaN scores"]
