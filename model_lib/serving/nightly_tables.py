"""The nightly tables' rows from the scored users (pure Spark transforms, one per table of contracts.NIGHTLY_TABLES):
every row starts with the day and ends with the champion that produced it. jobs/recommend.py scores the users
(batch_scoring) and writes these."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from model_lib.contracts import RECOMMENDATIONS, USER_ANOMALIES, USER_NEXT_BEHAVIOUR, USER_PROFILES, USER_SEGMENTS
from model_lib.serving.segments import Segments


def day_bounds(ds: dt.date) -> tuple[int, int]:
    """[start, end) of the day in epoch seconds, UTC (the sequences' event_times)."""
    start = int(dt.datetime.combine(ds, dt.time(), dt.UTC).timestamp())
    return start, start + 86_400


def champion_columns(ds: dt.date, model_name: str, version: int) -> tuple[list, list]:
    """The day and the model version, the first and last columns of every nightly table."""
    day = [F.lit(ds.isoformat()).alias("ds")]
    return day, [F.lit(model_name).alias("model_name"), F.lit(version).cast("int").alias("model_version")]


def recommendation_rows(scored: DataFrame, ds: dt.date, model_name: str, version: int) -> DataFrame:
    """Scored users -> the recommendations table (one row per user and rank)."""
    day, model = champion_columns(ds, model_name, version)
    listed = F.arrays_zip("item_ids", "scores", "sources", "reason_item_ids")
    ranked = scored.select("user_id", F.posexplode(listed).alias("position", "item"))
    return ranked.select(
        *day,
        "user_id",
        (F.col("position") + 1).cast("int").alias("rank"),
        F.col("item.item_ids").alias("item_id"),
        F.col("item.scores").alias("score"),
        F.col("item.sources").alias("source"),
        F.col("item.reason_item_ids").alias("reason_item_id"),
        *model,
    ).select(RECOMMENDATIONS.columns)


def next_behaviour_rows(
    scored: DataFrame, event_types: list[str], ds: dt.date, model_name: str, version: int
) -> DataFrame:
    """Scored users -> the user_next_behaviour table (one row per user and configured event type)."""
    day, model = champion_columns(ds, model_name, version)
    typed = scored.select("user_id", F.posexplode("next_event_types").alias("position", "probability"))
    names = F.array(*[F.lit(name) for name in event_types])
    return typed.select(
        *day, "user_id", F.element_at(names, F.col("position") + 1).alias("event_type"), "probability", *model
    ).select(USER_NEXT_BEHAVIOUR.columns)


def profile_rows(scored: DataFrame, ds: dt.date, model_name: str, version: int) -> DataFrame:
    """Scored users -> the user_profiles table: each user's vector and segment of the model."""
    day, model = champion_columns(ds, model_name, version)
    segmented = scored.where(F.col("segment").isNotNull())
    return segmented.select(*day, "user_id", "segment", "embedding", *model).select(USER_PROFILES.columns)


def segment_rows(scored: DataFrame, segments: Segments, ds: dt.date, model_name: str, version: int) -> DataFrame:
    """Scored users and the model's segments -> the user_segments table: per segment with users that day, their
    number and mean place in the picture, beside the segment's characteristic items and description (looked up in
    literal arrays indexed by segment: a handful of values, no join)."""
    day, model = champion_columns(ds, model_name, version)
    # A centroid KMeans left without training users has no description.
    by_segment = {entry["segment"]: entry for entry in segments.described}
    described = [by_segment.get(n, {"top_item_ids": [], "description": ""}) for n in range(len(segments.centroids))]
    items = F.array(*[F.array(*[F.lit(item) for item in entry["top_item_ids"]]) for entry in described])
    descriptions = F.array(*[F.lit(entry["description"]) for entry in described])
    today = (
        scored.where(F.col("segment").isNotNull())
        .groupBy("segment")
        .agg(F.count("*").alias("users"), F.avg("x").alias("x"), F.avg("y").alias("y"))
    )
    position = F.col("segment") + 1
    return today.select(
        *day,
        "segment",
        "users",
        F.element_at(items, position).cast("array<string>").alias("top_item_ids"),
        F.element_at(descriptions, position).alias("description"),
        "x",
        "y",
        *model,
    ).select(USER_SEGMENTS.columns)


ANOMALY_RANK_MARGIN = 0.002  # the approximate quantile's slack, as a share of the day's scored users


def anomaly_rows(scored: DataFrame, percentile: float, ds: dt.date, model_name: str, version: int) -> DataFrame:
    """Scored users -> the user_anomalies table: users with a scored event that day, ranked by their score among all
    such users (percent_rank: 0 the least surprising, 1 the most), those at or above `percentile`."""
    day, model = champion_columns(ds, model_name, version)
    scored_today = scored.where(F.col("anomaly_score").isNotNull())
    # A window over every scored user would be one task holding the whole day. The exact rank is only needed near
    # the top: a distributed approximate quantile (rank error under ANOMALY_RANK_MARGIN / 2 of the users) bounds the
    # candidates to the top 1 - percentile + ANOMALY_RANK_MARGIN of them, and only those are ranked in one task.
    users = scored_today.count()
    floor = scored_today.approxQuantile(
        "anomaly_score", [max(percentile - ANOMALY_RANK_MARGIN, 0.0)], ANOMALY_RANK_MARGIN / 2
    )
    candidates = scored_today.where(F.col("anomaly_score") >= floor[0]) if floor else scored_today.limit(0)
    # percent_rank over (score, user_id) ascending, computed from the top: (users - place from the top) / (users - 1).
    from_top = F.row_number().over(Window.orderBy(F.col("anomaly_score").desc(), F.col("user_id").desc()))
    ranked = candidates.withColumn("percentile", (F.lit(users) - from_top) / F.lit(max(users - 1, 1)))
    return (
        ranked.where(F.col("percentile") >= percentile)
        .select(
            *day,
            "user_id",
            F.col("anomaly_score").alias("score"),
            "percentile",
            F.col("anomaly_events").alias("events"),
            "outside_top_share",
            "most_surprising_item_id",
            *model,
        )
        .select(USER_ANOMALIES.columns)
    )
