"""Step 4 — recommend: score every user with history with one pinned model version (Spark, mapInPandas).

Reads   lake/sessionized/ds=D/sequences/ and `models:/reco-lstm-attention/<version>` (the champion, resolved once
        by the caller)
Writes  lake/recommendations/ds=D/  one row per (user, rank): top-K items with scores, source and each one's reason
        lake/user_next_behaviour/ds=D/  one row per (user, event type): the chance the next event is of that type
                                        (empty when the champion has no event-type head)
        lake/user_profiles/ds=D/, lake/user_segments/ds=D/  each user's vector and segment; each segment's size,
                                        characteristic items and place in a 2-D picture (logged to MLflow's
                                        reco-nightly experiment)
        lake/user_anomalies/ds=D/       the users whose events of day D the model found least likely (at or above
                                        RECO_ANOMALY_PERCENTILE of the day's scores)
        lake/run_stats/recommend/ds=D/  model version, K, users, rows, known share, seconds

Before any scoring the model is checked against the day: a champion trained on other items (it knows less than
`recommend_min_known_share` of the day's events) or on other event types is refused with an error, not silently
turned into popular-items lists for everybody.

Each Python worker loads the model once and scores whole Arrow batches: one forward pass, one matrix multiply
against the item table, seen items excluded, top-K, one row per user (batch_scoring.SCORED_USER_SCHEMA); native
Spark functions turn those rows into the nightly tables, so every table comes from the same single pass. Run as
`spark-submit jobs/recommend.py --ds D --model-version N` or `reco recommend --ds D` (which resolves the champion
itself).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import time

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from model_lib.config import MAX_TOP_K, REPEAT_POLICIES, Settings, get_settings, parse_ds
from model_lib.contracts import RECOMMENDATIONS, USER_ANOMALIES, USER_NEXT_BEHAVIOUR, USER_PROFILES, USER_SEGMENTS
from model_lib.data.vocabulary import fit_problems, known_share, vocabulary_item_ids
from model_lib.progress import say, stage
from model_lib.serving import batch_scoring, profiles
from model_lib.serving.recommender import IncompatibleModelError
from model_lib.storage import registry
from model_lib.storage.lake import commit_folder, read_parquet_folder, staging_path, write_run_stats
from model_lib.storage.spark import spark_session


# --- extract / transform / load ---------------------------------------------------------------------------
def extract_sequences(spark: SparkSession, settings: Settings, ds: dt.date) -> DataFrame:
    return spark.read.parquet(str(settings.lake.sequences_dir(ds)))


def extract_day_vocabulary(settings: Settings, ds: dt.date) -> pd.DataFrame:
    """The vocabulary the day's sequences were indexed with (item_id, item_index, count)."""
    return read_parquet_folder(settings.lake.vocab_dir(ds))


def extract_day_events(settings: Settings, ds: dt.date, day_vocabulary: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Events per item_id to weigh the model-fit check by, and what they are: the day's own new events (items
    outside the vocabulary included); on a day without any, every event so far (the vocabulary's counts)."""
    folder = settings.lake.day_item_counts_dir(ds)
    if folder.exists():
        day = read_parquet_folder(folder)
        if day["count"].sum() > 0:
            return day, "the day's events"
    return day_vocabulary, "the events so far (the day brought none)"


def check_model_fits_day(settings: Settings, version: int, event_counts: pd.DataFrame, basis: str) -> float:
    """The share of `event_counts` (described by `basis`) the model knows; raises IncompatibleModelError when the
    model cannot score the day meaningfully."""

    model_vocabulary, model_event_types = registry.trained_on(settings, version)
    share = known_share(model_vocabulary, event_counts)
    problems = fit_problems(
        share,
        settings.gate.recommend_min_known_share,
        "RECO_RECOMMEND_MIN_KNOWN_SHARE",
        basis,
        model_event_types,
        settings.sessionize.event_types,
    )
    if problems:
        raise IncompatibleModelError(
            f"{settings.model.model_name} v{version} does not fit the sequences of this day: {'; '.join(problems)}. "
            "Promote a version trained on this catalogue (reco_training, or `reco promote --version N`), then re-run; "
            "nothing was written."
        )
    return share


def score_users(
    sequences: DataFrame, day_item_ids: np.ndarray, settings: Settings, version: int, k: int, ds: dt.date
) -> DataFrame:
    """Sequences -> one scored row per user with history (batch_scoring.SCORED_USER_SCHEMA)."""
    has_history = sequences.where(F.col("length") > 0)
    body = functools.partial(
        batch_scoring.score_partition,
        tracking_uri=settings.engines.mlflow_tracking_uri,
        model_name=settings.model.model_name,
        version=version,
        k=k,
        day_item_ids=day_item_ids,
        policy=settings.repeat_rule(),
        window=settings.sessionize.seq_len,
        day=day_bounds(ds),
        top_g=settings.serving.anomaly_top_g,
    )
    return has_history.mapInPandas(body, batch_scoring.SCORED_USER_SCHEMA)


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


def profile_tables(scored: DataFrame, sequences: DataFrame, settings: Settings, ds: dt.date, version: int):
    """Scored users -> (user_profiles rows, user_segments rows, the segmented users): KMeans over the user vectors,
    each segment described by its most characteristic items (titles where lake/items has them)."""
    spark = scored.sparkSession
    day, model = champion_columns(ds, settings.model.model_name, version)
    rules = profiles.SegmentRules(settings.serving.profile_segments, settings.training.seed)
    segmented = profiles.segment_users(scored, rules).persist(StorageLevel.MEMORY_AND_DISK)
    vocabulary = spark.read.parquet(str(settings.lake.vocab_dir(ds)))
    top_items = profiles.characteristic_items(segmented, sequences, vocabulary, rules)
    titles_file = settings.lake.items_dir / "items.parquet"
    titles = spark.read.parquet(str(titles_file)) if titles_file.exists() else None
    segments = profiles.segment_rows(segmented, top_items, titles, rules).select(*day, "*", *model)
    users = segmented.select(*day, "user_id", "segment", "embedding", *model)
    return users.select(USER_PROFILES.columns), segments.select(USER_SEGMENTS.columns), segmented


def log_segments(settings: Settings, ds: dt.date, version: int, segmented: DataFrame, segments: pd.DataFrame):
    """The day's segments picture and table in an MLflow run of the reco-nightly experiment, for model owners."""
    import tempfile
    from pathlib import Path

    import mlflow

    from model_lib.evaluation.report import segments_picture

    points = segmented.select("x", "y", "segment").limit(3000).toPandas()
    registry.configure(settings, registry.NIGHTLY_EXPERIMENT)
    with mlflow.start_run(run_name=f"nightly-{ds}"), tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"ds": ds.isoformat(), "model_name": settings.model.model_name, "model_version": version})
        mlflow.log_params({"profile_segments": settings.serving.profile_segments})
        mlflow.log_metrics({"scored_users": float(segments["users"].sum()), "segments": float(len(segments))})
        mlflow.log_artifact(str(segments_picture(points, segments, Path(tmp) / "user_segments.png")))
        mlflow.log_table(
            segments.drop(columns=["ds"]).astype({"top_item_ids": str}), artifact_file="user_segments.json"
        )


def anomaly_rows(scored: DataFrame, percentile: float, ds: dt.date, model_name: str, version: int) -> DataFrame:
    """Scored users -> the user_anomalies table: users with a scored event that day, ranked by their score among all
    such users (percent_rank: 0 the least surprising, 1 the most), those at or above `percentile`."""
    day, model = champion_columns(ds, model_name, version)
    scored_today = scored.where(F.col("anomaly_score").isNotNull())
    ranked = scored_today.withColumn("percentile", F.percent_rank().over(Window.orderBy("anomaly_score", "user_id")))
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


def load(table: DataFrame, folder, order: list[str]) -> None:
    """One day of a nightly table, committed whole."""
    staged = staging_path(folder)
    # Sorted within each partition, not globally: a global orderBy samples its input first, which would run the
    # scoring twice. The input files and their split are fixed, so the output files are still byte-for-byte stable.
    table.sortWithinPartitions(*order).write.mode("overwrite").parquet(str(staged))
    commit_folder(staged, folder)


def nightly_tables(scored: DataFrame, sequences: DataFrame, settings: Settings, ds: dt.date, version: int) -> None:
    """Every nightly table of the day from one scoring pass (kept while they are written), recommendations last:
    the publish step needs them, and checks that every table comes from one model version."""
    name, lake = settings.model.model_name, settings.lake
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        behaviour = next_behaviour_rows(scored, settings.sessionize.event_types, ds, name, version)
        load(behaviour, lake.nightly_table_dir(USER_NEXT_BEHAVIOUR.name, ds), ["user_id", "event_type"])
        if not scored.isEmpty():
            users, segments, segmented = profile_tables(scored, sequences, settings, ds, version)
            load(users, lake.nightly_table_dir(USER_PROFILES.name, ds), ["user_id"])
            load(segments.coalesce(1), lake.nightly_table_dir(USER_SEGMENTS.name, ds), ["segment"])
            log_segments(
                settings, ds, version, segmented, pd.read_parquet(lake.nightly_table_dir(USER_SEGMENTS.name, ds))
            )
            segmented.unpersist()
        else:  # nobody to segment (KMeans needs a point): the day's profile tables are empty, not yesterday's
            for table in (USER_PROFILES, USER_SEGMENTS):
                empty = scored.sparkSession.createDataFrame([], table.spark_schema)
                load(empty, lake.nightly_table_dir(table.name, ds), table.key[1:])
        anomalous = anomaly_rows(scored, settings.serving.anomaly_percentile, ds, name, version)
        load(anomalous, lake.nightly_table_dir(USER_ANOMALIES.name, ds), ["user_id"])
        load(recommendation_rows(scored, ds, name, version), lake.recommendations_dir(ds), ["user_id", "rank"])
    finally:
        scored.unpersist()


def run(settings: Settings, ds: dt.date, version: int | None = None, k: int | None = None) -> dict:
    if version is None:
        from model_lib.storage import registry

        version = registry.champion_version(settings)
    k = k or settings.serving.top_k
    started = time.time()
    day_vocabulary = extract_day_vocabulary(settings, ds)
    known = check_model_fits_day(settings, version, *extract_day_events(settings, ds, day_vocabulary))
    spark = spark_session(settings.engines, "reco-recommend")
    with stage(f"recommend ds={ds} with {settings.model.model_name} v{version}, top-{k}") as report:
        sequences = extract_sequences(spark, settings, ds)
        scored = score_users(sequences, vocabulary_item_ids(day_vocabulary), settings, version, k, ds)
        nightly_tables(scored, sequences, settings, ds, version)
        written = spark.read.parquet(str(settings.lake.recommendations_dir(ds)))
        counts = written.agg(F.countDistinct("user_id").alias("users"), F.count("*").alias("rows")).first()
        by_source = {r["source"]: r["count"] for r in written.groupBy("source").count().collect()}
        behaviour_rows = spark.read.parquet(str(settings.lake.nightly_table_dir(USER_NEXT_BEHAVIOUR.name, ds))).count()
        anomalous = spark.read.parquet(str(settings.lake.nightly_table_dir(USER_ANOMALIES.name, ds))).count()
        report(
            users=counts["users"],
            rows=counts["rows"],
            next_behaviour_rows=behaviour_rows,
            anomalous_users=anomalous,
            **by_source,
        )
    summary = {
        "ds": ds.isoformat(),
        "model_version": version,
        "k": k,
        "users": counts["users"],
        "rows": counts["rows"],
        "known_share": round(known, 4),
        "repeat_policy": settings.repeat_rule().describe(),
        "repeat_rows": int(by_source.get("repeat", 0)),
        "next_behaviour_rows": behaviour_rows,
        "anomalous_users": anomalous,
        "seconds": round(time.time() - started, 1),
    }
    write_run_stats(summary, settings.lake.run_stats_dir("recommend", ds))
    say(f"recommend summary {json.dumps(summary)}")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--model-version", type=int, help="pinned version (default: resolve champion now)")
    parser.add_argument("--k", type=int, help="recommendations per user (default: RECO_TOP_K)")
    parser.add_argument(
        "--repeat-policy",
        choices=("default", *REPEAT_POLICIES),
        default="default",
        help="what may be recommended (default: RECO_REPEAT_POLICY)",
    )
    args = parser.parse_args(argv)
    if args.k is not None and not 0 < args.k <= MAX_TOP_K:
        parser.error(f"--k must be between 1 and {MAX_TOP_K}")
    overrides = {"repeat_policy": args.repeat_policy} if args.repeat_policy != "default" else {}
    return run(get_settings(**overrides), parse_ds(args.ds), args.model_version, args.k)


if __name__ == "__main__":
    main()
