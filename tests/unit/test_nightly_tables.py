"""The recommend job's transforms from scored users to the nightly tables (jobs/recommend.py), on tiny DataFrames."""

import datetime as dt

import pytest

from model_lib.contracts import RECOMMENDATIONS, USER_ANOMALIES, USER_NEXT_BEHAVIOUR
from model_lib.serving.batch_scoring import SCORED_USER_SCHEMA

pytestmark = pytest.mark.spark
DS = dt.date(2024, 5, 1)


def scored_users(spark):
    rows = [
        # user, items, scores, sources, reasons, next types, embedding, anomaly score, events, outside, surprising
        ("a", ["i1", "i2"], [2.0, 1.0], ["model", "repeat"], ["h1", "h2"], [0.7, 0.3], [1.0], 1.0, 2, 0.0, "i9"),
        ("b", ["i3"], [5.0], ["popular"], [None], None, [2.0], None, None, None, None),
        ("c", [], [], [], [], [0.1, 0.9], [3.0], 4.0, 1, 1.0, "i8"),
        ("d", ["i4"], [1.5], ["model"], ["h4"], [0.5, 0.5], [4.0], 2.5, 3, 0.5, "i7"),
    ]
    return spark.createDataFrame(rows, SCORED_USER_SCHEMA)


def test_recommendations_are_ranked_in_list_order_with_each_items_source_and_reason(spark):
    from jobs.recommend import recommendation_rows

    table = recommendation_rows(scored_users(spark), DS, "m", 3).toPandas()
    assert list(table.columns) == RECOMMENDATIONS.columns
    got = table.sort_values(["user_id", "rank"])[["user_id", "rank", "item_id", "source", "reason_item_id"]]
    assert got.values.tolist() == [
        ["a", 1, "i1", "model", "h1"],
        ["a", 2, "i2", "repeat", "h2"],
        ["b", 1, "i3", "popular", None],
        ["d", 1, "i4", "model", "h4"],
    ]  # c has no candidate left: no rows
    assert set(table["ds"]) == {"2024-05-01"} and set(table["model_version"]) == {3}


def test_next_behaviour_names_each_probability_by_its_event_type(spark):
    from jobs.recommend import next_behaviour_rows

    table = next_behaviour_rows(scored_users(spark), ["view", "purchase"], DS, "m", 3).toPandas()
    assert list(table.columns) == USER_NEXT_BEHAVIOUR.columns
    got = {(r.user_id, r.event_type): r.probability for r in table.itertuples()}
    assert got == {
        ("a", "view"): 0.7,
        ("a", "purchase"): 0.3,
        ("c", "view"): 0.1,
        ("c", "purchase"): 0.9,
        ("d", "view"): 0.5,
        ("d", "purchase"): 0.5,
    }  # b: no head output, no rows


def test_anomalies_rank_the_days_scored_users_and_keep_those_at_the_percentile(spark):
    from jobs.recommend import anomaly_rows

    scored = scored_users(spark)
    everyone = anomaly_rows(scored, 0.0, DS, "m", 3).toPandas().set_index("user_id")
    assert list(anomaly_rows(scored, 0.0, DS, "m", 3).columns) == USER_ANOMALIES.columns
    # b had no event that day; a < d < c by score: percent_rank 0, 0.5, 1.
    assert everyone["percentile"].to_dict() == {"a": 0.0, "d": 0.5, "c": 1.0}
    assert everyone.loc["c", ["score", "events", "outside_top_share", "most_surprising_item_id"]].tolist() == [
        4.0,
        1,
        1.0,
        "i8",
    ]
    assert sorted(anomaly_rows(scored, 0.5, DS, "m", 3).toPandas()["user_id"]) == ["c", "d"]
    assert anomaly_rows(scored, 0.99, DS, "m", 3).toPandas()["user_id"].tolist() == ["c"]
