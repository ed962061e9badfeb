"""User profiles from the model's own user vectors: segments (Spark MLlib KMeans), what characterises each segment,
and a 2-D picture of them (Spark MLlib PCA), fitted once per model version when it is trained (jobs/train.py) and
stored with it (serving/segments.py applies them to every user each night). DataFrame transforms with native Spark
functions over users (user_id, embedding) and their windows (user_id, item_indices).

    segment      KMeans (k = RECO_PROFILE_SEGMENTS, seeded by RECO_SEED) over the user vectors after each user's
                 last event (the vectors that score the items), Euclidean distance
    top items    per segment, the items that most set its users apart: share x ln(lift), where share is the part of
                 the segment's users with the item in their window and lift that share over everybody's (the item's
                 term in the divergence of the segment's items from everybody's). Raw lift alone would crown items
                 a handful of users have; the share weighs it by how many of the segment have them. Only items over-
                 represented in the segment (lift > 1) that at least `min_users` of its users have
    x, y         the first two principal components of the user vectors (the segment's mean for its row)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import PCA
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from model_lib.contracts import FIRST_ITEM_INDEX
from model_lib.serving.segments import Segments

PICTURE_POINTS = 3000  # users drawn in the segments picture


@dataclass(frozen=True)
class SegmentRules:
    segments: int
    seed: int
    top_items: int = 5
    min_users: int = 3


def fit_segments(users: DataFrame, windows: DataFrame, vocabulary: DataFrame, titles: DataFrame | None, rules):
    """users (user_id, embedding array<double>), their windows (user_id, item_indices), the model's vocabulary
    (item_index, item_id) and item titles if any (item_id, title) -> (Segments, a sample of the users' points
    (x, y, segment) for the picture)."""
    segmented, centroids, components = segment_users(users, rules)
    segmented = segmented.persist()
    try:
        top_items = characteristic_items(segmented, windows, vocabulary, rules)
        described = describe_segments(segmented, top_items, titles, rules).orderBy("segment").toPandas()
        points = segmented.select("x", "y", "segment").limit(PICTURE_POINTS).toPandas()
    finally:
        segmented.unpersist()
    records = [
        {
            "segment": int(row.segment),
            "users": int(row.users),
            "top_item_ids": [str(item) for item in row.top_item_ids],
            "description": row.description,
            "x": float(row.x),
            "y": float(row.y),
        }
        for row in described.itertuples()
    ]
    return Segments(centroids, components, tuple(records)), points


def segment_users(users: DataFrame, rules: SegmentRules) -> tuple[DataFrame, np.ndarray, np.ndarray]:
    """Users -> (user_id, embedding, segment (int), x, y (the 2-D projection); the KMeans centroids (S, D); the
    principal components (D, 2))."""
    vectors = users.select("user_id", "embedding", array_to_vector("embedding").alias("features"))
    count = vectors.count()
    clusters = KMeans(k=max(1, min(rules.segments, count)), seed=rules.seed, featuresCol="features").fit(vectors)
    segmented = clusters.transform(vectors).withColumnRenamed("prediction", "segment")
    pca = PCA(k=2, inputCol="features", outputCol="projected").fit(segmented)
    plane = vector_to_array("projected")
    frame = pca.transform(segmented).select(
        "user_id", "embedding", F.col("segment").cast("int").alias("segment"), plane[0].alias("x"), plane[1].alias("y")
    )
    centroids = np.array(clusters.clusterCenters(), np.float64)
    return frame, centroids, np.asarray(pca.pc.toArray(), np.float64)


def characteristic_items(segments: DataFrame, windows: DataFrame, vocabulary: DataFrame, rules: SegmentRules):
    """Per segment the `top_items` most characteristic item ids (see the module docstring): segment, top_item_ids
    (array<string>, best first). `windows` holds the users' events (user_id, item_indices), `vocabulary` names the
    indices (item_index, item_id)."""
    events = windows.select("user_id", F.explode("item_indices").alias("item_index")).where(
        F.col("item_index") >= FIRST_ITEM_INDEX
    )
    members = events.join(segments.select("user_id", "segment"), "user_id")
    per_user = members.select("segment", "user_id", "item_index").distinct()
    in_segment = per_user.groupBy("segment", "item_index").agg(F.count("*").alias("segment_users"))
    sizes = segments.groupBy("segment").agg(F.count("*").alias("size"))
    overall = per_user.groupBy("item_index").agg(F.count("*").alias("all_users"))
    everybody = segments.count()
    lift = (
        in_segment.join(sizes, "segment")
        .join(overall, "item_index")
        .where(F.col("segment_users") >= rules.min_users)
        .withColumn("share", F.col("segment_users") / F.col("size"))
        .withColumn("lift", F.col("share") / (F.col("all_users") / F.lit(everybody)))
        .where(F.col("lift") > 1)
        .withColumn("weight", F.col("share") * F.log("lift"))
    )
    best = Window.partitionBy("segment").orderBy(F.col("weight").desc(), F.col("segment_users").desc(), "item_index")
    ranked = lift.withColumn("position", F.row_number().over(best)).where(F.col("position") <= rules.top_items)
    named = ranked.join(vocabulary.select("item_index", "item_id"), "item_index")
    ordered = F.array_sort(F.collect_list(F.struct("position", "item_id")))
    return named.groupBy("segment").agg(F.transform(ordered, lambda entry: entry["item_id"]).alias("top_item_ids"))


def describe_segments(segments: DataFrame, top_items: DataFrame, titles: DataFrame | None, rules: SegmentRules):
    """Per segment: users, the mean x, y, top_item_ids and a description (the items' titles where item metadata
    exists, else their ids; a segment whose users share no item `min_users` times says so)."""
    summary = segments.groupBy("segment").agg(F.count("*").alias("users"), F.avg("x").alias("x"), F.avg("y").alias("y"))
    with_items = summary.join(top_items, "segment", "left").withColumn(
        "top_item_ids", F.coalesce("top_item_ids", F.array().cast("array<string>"))
    )
    unnamed = F.lit(f"no item shared by {rules.min_users} of its users")
    if titles is None:
        named_by_id = F.array_join("top_item_ids", "; ")
        return with_items.withColumn("description", F.when(F.size("top_item_ids") > 0, named_by_id).otherwise(unnamed))
    named = (
        with_items.select("segment", F.posexplode("top_item_ids").alias("position", "item_id"))
        .join(titles.select("item_id", "title"), "item_id", "left")
        .groupBy("segment")
        .agg(
            F.array_sort(F.collect_list(F.struct("position", F.coalesce("title", "item_id").alias("name")))).alias("n")
        )
        .select("segment", F.array_join(F.transform("n", lambda entry: entry["name"]), "; ").alias("description"))
    )
    return with_items.join(named, "segment", "left").withColumn("description", F.coalesce("description", unnamed))


def segments_of_model(spark, recommender, sequences, seq_len: int, rules: SegmentRules, titles=None) -> pd.DataFrame:
    """Fits a Recommender's segments on `sequences` (data.splits.Sequences, the users it was trained on, read in
    windows of `seq_len`), stores them on it (recommender.segments, saved with it) and returns the picture's points
    (x, y, segment). `titles` (pandas item_id, title) names the items where item metadata exists."""
    window = sequences.last_events(seq_len)
    vectors = recommender.scorer.encode(window.model_inputs()).user_vectors
    user_ids = [str(user) for user in sequences.user_ids]
    users = spark.createDataFrame(
        pd.DataFrame({"user_id": user_ids, "embedding": list(vectors.astype(np.float64))}),
        "user_id string, embedding array<double>",
    )
    windows = spark.createDataFrame(
        pd.DataFrame({"user_id": user_ids, "item_indices": list(window.items.astype(np.int32))}),
        "user_id string, item_indices array<int>",
    )
    named = np.flatnonzero(recommender.item_ids != "")
    vocabulary = spark.createDataFrame(
        pd.DataFrame({"item_index": named.astype(np.int32), "item_id": recommender.item_ids[named].astype(str)}),
        "item_index int, item_id string",
    )
    titled = spark.createDataFrame(titles[["item_id", "title"]].astype(str)) if titles is not None else None
    recommender.segments, points = fit_segments(users, windows, vocabulary, titled, rules)
    return points
