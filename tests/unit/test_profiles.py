"""User profiles (model_lib/serving/profiles.py) on tiny DataFrames whose right segments are known."""

import numpy as np
import pytest

from model_lib.serving import profiles
from model_lib.serving.segments import Segments

pytestmark = pytest.mark.spark


def test_segments_follow_the_user_vectors_and_are_described_by_their_own_items(spark):
    rng = np.random.default_rng(0)
    rows, histories = [], []
    # Two groups far apart in vector space; group a watches items 2-4 (and the popular 9), group b items 5-7 (and 9).
    for group, centre, items in (("a", 5.0, [2, 3, 4]), ("b", -5.0, [5, 6, 7])):
        for n in range(12):
            user = f"{group}{n:02d}"
            rows.append((user, [float(v) for v in centre + rng.normal(0, 0.3, 4)]))
            histories.append((user, [0, 0, *rng.permutation(items).tolist(), 9]))
    scored = spark.createDataFrame(rows, "user_id string, embedding array<double>")
    sequences = spark.createDataFrame(histories, "user_id string, item_indices array<int>")
    vocabulary = spark.createDataFrame([(i, f"item{i}") for i in range(2, 10)], "item_index int, item_id string")
    rules = profiles.SegmentRules(segments=2, seed=7, top_items=3, min_users=3)

    frame, centroids, components = profiles.segment_users(scored, rules)
    segmented = frame.toPandas()
    by_group = segmented.assign(group=segmented["user_id"].str[0]).groupby("group")["segment"]
    assert by_group.nunique().tolist() == [1, 1] and by_group.first().nunique() == 2  # one segment per group
    assert segmented[["x", "y"]].notna().all().all()

    top = profiles.characteristic_items(frame, sequences, vocabulary, rules).toPandas()
    segment_of = dict(zip(segmented["user_id"].str[0], segmented["segment"], strict=False))
    items = {row.segment: list(row.top_item_ids) for row in top.itertuples()}
    assert set(items[segment_of["a"]]) == {"item2", "item3", "item4"}  # item9 is everybody's: lift 1, ranked last
    assert set(items[segment_of["b"]]) == {"item5", "item6", "item7"}

    titles = spark.createDataFrame([("item2", "Two"), ("item3", "Three")], "item_id string, title string")
    described = profiles.describe_segments(
        frame, profiles.characteristic_items(frame, sequences, vocabulary, rules), titles, rules
    )
    description = described.toPandas().set_index("segment")
    assert description.loc[segment_of["a"], "users"] == 12
    assert set(description.loc[segment_of["a"], "description"].split("; ")) == {"Two", "Three", "item4"}


def test_the_stored_segments_assign_users_as_spark_does(spark):
    """The nightly workers assign users with numpy (serving/segments.py); it must be Spark's KMeans and PCA."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 2.0, (4, 6))
    vectors = np.vstack([centre + rng.normal(0, 0.8, (40, 6)) for centre in centres])
    users = spark.createDataFrame(
        [(f"u{n}", [float(v) for v in row]) for n, row in enumerate(vectors)], "user_id string, embedding array<double>"
    )
    windows = spark.createDataFrame(
        [(f"u{n}", [2, 3]) for n in range(len(vectors))], "user_id string, item_indices array<int>"
    )
    vocabulary = spark.createDataFrame([(2, "item2"), (3, "item3")], "item_index int, item_id string")
    rules = profiles.SegmentRules(segments=4, seed=1)

    segments, points = profiles.fit_segments(users, windows, vocabulary, None, rules)
    by_spark = (
        profiles.segment_users(users, rules)[0].toPandas().sort_values("user_id", key=lambda s: s.str[1:].astype(int))
    )
    segment, plane = Segments.from_config(segments.to_config()).assign(vectors)
    assert (segment == by_spark["segment"].to_numpy()).all()
    np.testing.assert_allclose(plane, by_spark[["x", "y"]].to_numpy(), rtol=1e-9, atol=1e-9)
    assert [entry["segment"] for entry in segments.described] == [0, 1, 2, 3]
    assert sum(entry["users"] for entry in segments.described) == len(vectors)
    assert len(points) == len(vectors) and set(points["segment"]) == {0, 1, 2, 3}
