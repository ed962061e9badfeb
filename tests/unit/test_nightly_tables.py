"""The recommend job's transforms from scored users to the nightly tables (jobs/recommend.py), on tiny DataFrames."""

import datetime as dt

import numpy as np
import pytest

from model_lib.contracts import RECOMMENDATIONS, USER_ANOMALIES, USER_NEXT_BEHAVIOUR, USER_PROFILES, USER_SEGMENTS
from model_lib.serving.batch_scoring import SCORED_USER_SCHEMA
from model_lib.serving.segments import Segments

pytestmark = pytest.mark.spark
DS = dt.date(2024, 5, 1)


def scored_users(spark):
    rows = [
        # user, items, scores, sources, reasons, next types, embedding, segment, x, y, anomaly score, events,
        # outside, surprising
        ("a", ["i1", "i2"], [2.0, 1.0], ["model", "repeat"], ["h1", "h2"], [0.7, 0.3], [1.0], 1, 1.0, 2.0)
        + (1.0, 2, 0.0, "i9"),
        ("b", ["i3"], [5.0], ["popular"], [None], None, [2.0], 0, -1.0, 0.0) + (None, None, None, None),
        ("c", [], [], [], [], [0.1, 0.9], [3.0], 1, 3.0, 4.0) + (4.0, 1, 1.0, "i8"),
        ("d", ["i4"], [1.5], ["model"], ["h4"], [0.5, 0.5], [4.0], None, None, None) + (2.5, 3, 0.5, "i7"),
    ]
    return spark.createDataFrame(rows, SCORED_USER_SCHEMA)


def test_recommendations_are_ranked_in_list_order_with_each_items_source_and_reason(spark):
    from model_lib.serving.nightly_tables import recommendation_rows

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
    from model_lib.serving.nightly_tables import next_behaviour_rows

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
    from model_lib.serving.nightly_tables import anomaly_rows

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


def test_profiles_and_segments_count_the_days_users_beside_the_models_descriptions(spark):
    from model_lib.serving.nightly_tables import profile_rows, segment_rows

    scored = scored_users(spark)
    profiles = profile_rows(scored, DS, "m", 3).toPandas()
    assert list(profiles.columns) == USER_PROFILES.columns
    # d has no segment (the model had none when it was scored): no profile row.
    assert profiles.sort_values("user_id")[["user_id", "segment"]].values.tolist() == [["a", 1], ["b", 0], ["c", 1]]
    described = (
        {"segment": 0, "users": 40, "top_item_ids": ["i5"], "description": "Five", "x": 0.0, "y": 0.0},
        {"segment": 1, "users": 60, "top_item_ids": ["i6", "i7"], "description": "Six; Seven", "x": 0.0, "y": 0.0},
        {"segment": 2, "users": 10, "top_item_ids": [], "description": "nobody today", "x": 0.0, "y": 0.0},
    )
    segments = Segments(np.zeros((3, 1)), np.zeros((1, 2)), described)
    table = segment_rows(scored, segments, DS, "m", 3).toPandas().sort_values("segment")
    assert list(table.columns) == USER_SEGMENTS.columns
    # Today's users and mean place per segment; the model's items and description; segment 2 had nobody today.
    assert table[["segment", "users", "x", "y", "description"]].values.tolist() == [
        [0, 1, -1.0, 0.0, "Five"],
        [1, 2, 2.0, 3.0, "Six; Seven"],
    ]
    assert [list(items) for items in table["top_item_ids"]] == [["i5"], ["i6", "i7"]]
