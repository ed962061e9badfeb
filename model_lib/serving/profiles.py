"""User profiles from the model's own user vectors: segments (Spark MLlib KMeans), what characterises each segment,
and a 2-D picture of them (Spark MLlib PCA). Pure DataFrame -> DataFrame transforms over the recommend job's scored
users (batch_scoring.SCORED_USER_SCHEMA), native Spark functions only.

    segment      KMeans (k = RECO_PROFILE_SEGMENTS, seeded by RECO_SEED) over the user vectors after each user's
                 last event (the vectors that score the items), Euclidean distance
    top items    per segment, the items whose share among the segment's users' window events most exceeds their
                 share among everybody's (lift), among items at least `min_users` of the segment's users have
    x, y         the first two principal components of the user vectors (the segment's mean for its row)
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import PCA
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from model_lib.contracts import FIRST_ITEM_INDEX


@dataclass(frozen=True)
class SegmentRules:
    segments: int
    seed: int
    top_items: int = 5
    min_users: int = 3


def segment_users(scored: DataFrame, rules: SegmentRules) -> DataFrame:
    """Scored users -> user_id, embedding (array<double>), segment (int), x, y (the 2-D projection)."""
    vectors = scored.select("user_id", "embedding", array_to_vector("embedding").alias("features"))
    users = vectors.count()
    clusters = KMeans(k=max(1, min(rules.segments, users)), seed=rules.seed, featuresCol="features").fit(vectors)
    segmented = clusters.transform(vectors).withColumnRenamed("prediction", "segment")
    projection = PCA(k=2, inputCol="features", outputCol="projected").fit(segmented).transform(segmented)
    plane = vector_to_array("projected")
    return projection.select(
        "user_id", "embedding", F.col("segment").cast("int").alias("segment"), plane[0].alias("x"), plane[1].alias("y")
    )


def characteristic_items(segments: DataFrame, sequences: DataFrame, vocabulary: DataFrame, rules: SegmentRules):
    """Per segment the `top_items` item ids with the highest lift (see the module docstring): segment, top_item_ids
    (array<string>, best first). `sequences` is the day's sequences (user_id, item_indices), `vocabulary` the day's
    (item_index, item_id)."""
    events = sequences.select("user_id", F.explode("item_indices").alias("item_index")).where(
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
        .withColumn("lift", (F.col("segment_users") / F.col("size")) / (F.col("all_users") / F.lit(everybody)))
    )
    best = Window.partitionBy("segment").orderBy(F.col("lift").desc(), F.col("segment_users").desc(), "item_index")
    ranked = lift.withColumn("position", F.row_number().over(best)).where(F.col("position") <= rules.top_items)
    named = ranked.join(vocabulary.select("item_index", "item_id"), "item_index")
    ordered = F.array_sort(F.collect_list(F.struct("position", "item_id")))
    return named.groupBy("segment").agg(F.transform(ordered, lambda entry: entry["item_id"]).alias("top_item_ids"))


def segment_rows(segments: DataFrame, top_items: DataFrame, titles: DataFrame | None, rules: SegmentRules) -> DataFrame:
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
