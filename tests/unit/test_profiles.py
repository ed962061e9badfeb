"""User profiles (model_lib/serving/profiles.py) on tiny DataFrames whose right segments are known."""

import numpy as np
import pytest

from model_lib.serving import profiles

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

    segmented = profiles.segment_users(scored, rules).toPandas()
    by_group = segmented.assign(group=segmented["user_id"].str[0]).groupby("group")["segment"]
    assert by_group.nunique().tolist() == [1, 1] and by_group.first().nunique() == 2  # one segment per group
    assert segmented[["x", "y"]].notna().all().all()

    frame = profiles.segment_users(scored, rules)
    top = profiles.characteristic_items(frame, sequences, vocabulary, rules).toPandas()
    segment_of = dict(zip(segmented["user_id"].str[0], segmented["segment"], strict=False))
    items = {row.segment: list(row.top_item_ids) for row in top.itertuples()}
    assert set(items[segment_of["a"]]) == {"item2", "item3", "item4"}  # item9 is everybody's: lift 1, ranked last
    assert set(items[segment_of["b"]]) == {"item5", "item6", "item7"}

    titles = spark.createDataFrame([("item2", "Two"), ("item3", "Three")], "item_id string, title string")
    described = profiles.segment_rows(
        frame, profiles.characteristic_items(frame, sequences, vocabulary, rules), titles, rules
    )
    description = described.toPandas().set_index("segment")
    assert description.loc[segment_of["a"], "users"] == 12
    assert set(description.loc[segment_of["a"], "description"].split("; ")) == {"Two", "Three", "item4"}
