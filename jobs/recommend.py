"""Step 4 — recommend: score every user with history with one pinned model version (Spark, mapInPandas).

Reads   lake/sessionized/ds=D/sequences/ and `models:/reco-lstm-attention/<version>` (the champion, resolved once
        by the caller)
Writes  lake/nightly/ds=D/, the night's tables committed as one unit:
          recommendations/      one row per (user, rank): top-K items with scores, source and each one's reason
          user_next_behaviour/  one row per (user, event type): the chance the next event is of that type
                                (empty when the champion has no event-type head)
          user_profiles/, user_segments/  each user's vector and segment of the model (fitted when it was trained,
                                serving/segments.py); each segment's users that day, characteristic items and mean
                                place in the 2-D picture
          user_anomalies/       the users whose events of day D the model found least likely (at or above
                                RECO_ANOMALY_PERCENTILE of the day's scores)
          (a table left out of RECO_NIGHTLY_EXTRAS is not computed and is not part of the night)
        lake/run_stats/recommend/ds=D/  model version, K, users, rows, known share, seconds

Before any scoring the model is checked against the day: a champion trained on other items (it knows less than
`recommend_min_known_share` of the day's events) or on other event types is refused with an error, not silently
turned into popular-items lists for everybody.

The version's files are read from the registry once, here, and broadcast; each Python worker loads them once (in
numpy: no TensorFlow, no MLflow) and scores whole Arrow batches: one forward pass, one matrix multiply
against the item table, seen items excluded, top-K, one row per user (batch_scoring.SCORED_USER_SCHEMA); native
Spark functions turn those rows into the nightly tables, so every table comes from the same single pass. Run as
`spark-submit jobs/recommend.py --ds D --model-version N` or `reco recommend --ds D` (which resolves the champion
itself).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from model_lib.config import MAX_TOP_K, REPEAT_POLICIES, SessionizedDay, Settings, get_settings, parse_ds
from model_lib.contracts import (
    RECOMMENDATIONS,
    USER_ANOMALIES,
    USER_NEXT_BEHAVIOUR,
    USER_PROFILES,
    USER_SEGMENTS,
    Table,
)
from model_lib.data.vocabulary import catalogue_items, fit_problems, known_share, vocabulary_item_ids
from model_lib.progress import say, stage
from model_lib.runtime import driver_java_options
from model_lib.serving import batch_scoring
from model_lib.serving.nightly_tables import (
    anomaly_rows,
    day_bounds,
    next_behaviour_rows,
    profile_rows,
    recommendation_rows,
    segment_rows,
)
from model_lib.serving.recommender import (
    SOURCE_MODEL,
    SOURCE_POPULAR,
    SOURCE_REPEAT,
    IncompatibleModelError,
    files_to_score,
)
from model_lib.serving.segments import Segments
from model_lib.storage.lake import (
    commit_folder,
    dated_folders,
    parquet_rows,
    pinned,
    read_parquet_folder,
    read_run_stats,
    staging_path,
    write_run_stats,
)
from model_lib.storage.spark import read_parquet, side_by_side, spark_session

if TYPE_CHECKING:
    from model_lib.serving.registry import TrainedOn


# --- the JVM it needs -----------------------------------------------------------------------------------------
def quick_jit(settings: Settings, ds: dt.date) -> bool:
    """Whether the job's JVM compiles with the JIT's quick tier only (runtime.driver_java_options): when the job's
    latest recorded run at or before ds took less than spark_quick_jit_seconds. Its length follows the users and
    the model, which change little from one night to the next; a first run keeps the optimizing tier."""
    if not settings.engines.spark_quick_jit:
        return False
    runs = dated_folders(settings.lake.run_stats_root("recommend"), "ds", ds)
    latest = read_run_stats(runs[-1][1]) if runs else None
    seconds = (latest or {}).get("seconds")
    return seconds is not None and seconds < settings.engines.spark_quick_jit_seconds


def night_java_options(settings: Settings, ds: dt.date) -> str:
    """The driver JVM options of the night's job, for spark-submit's command line (the DAG renders them when the
    task starts): inside the job the JVM is already running."""
    return driver_java_options(quick_jit=quick_jit(settings, ds))


# --- extract / transform / load ---------------------------------------------------------------------------
def extract_sequences(spark: SparkSession, day: SessionizedDay) -> DataFrame:
    return read_parquet(spark, day.sequences)


def extract_model(settings: Settings, version: int | None) -> tuple[int, dict[str, bytes], TrainedOn]:
    """The pinned version (the champion now when None), its files, read from the registry once, here, and verified
    against their checksum (registry.verified_recommender_files), and what it was trained on: the fit check reads
    them, the workers get the files broadcast. `run` calls this while the Spark session starts, so MLflow is
    imported here, not with the job: its import and its store take about 1.5 s of a fresh nightly job."""
    from model_lib.serving import registry

    if version is None:
        version = registry.champion_version(settings)
    files = registry.verified_recommender_files(settings, version)
    return version, files, registry.TrainedOn.of_files(files)


def broadcast_model(spark: SparkSession, settings: Settings, version: int, files: dict[str, bytes]):
    """The files the workers score with, broadcast -> (a key naming the version and its bytes, the Broadcast)."""
    files = files_to_score(files)
    digest = hashlib.sha256(b"".join(files[name] for name in sorted(files))).hexdigest()[:16]
    return f"{settings.model.model_name} v{version} {digest}", spark.sparkContext.broadcast(files)


def extract_day_vocabulary(day: SessionizedDay) -> pd.DataFrame:
    """The vocabulary the day's sequences were indexed with (item_id, item_index, count)."""
    return read_parquet_folder(day.vocab)


def extract_day_events(day: SessionizedDay, day_vocabulary: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Events per item_id to weigh the model-fit check by, and what they are: the day's own new events (items
    outside the vocabulary included); on a day without any, every event so far (the vocabulary's counts)."""
    folder = day.day_item_counts
    if folder.exists():
        day = read_parquet_folder(folder)
        if day["count"].sum() > 0:
            return day, "the day's events"
    return day_vocabulary, "the events so far (the day brought none)"


def check_model_fits_day(
    settings: Settings, version: int, trained_on: TrainedOn, event_counts: pd.DataFrame, basis: str
) -> float:
    """The share of `event_counts` (described by `basis`) the model (`trained_on`) knows; raises
    IncompatibleModelError when the model cannot score the day meaningfully."""
    share = known_share(trained_on.vocabulary, event_counts)
    problems = fit_problems(
        share,
        settings.gate.recommend_min_known_share,
        "RECO_RECOMMEND_MIN_KNOWN_SHARE",
        basis,
        trained_on.event_types,
        settings.sessionize.event_types,
    )
    if problems:
        raise IncompatibleModelError(
            f"{settings.model.model_name} v{version} does not fit the sequences of this day: {'; '.join(problems)}. "
            "Promote a version trained on this catalogue (reco_training, or `reco promote --version N`), then re-run; "
            "nothing was written."
        )
    return share


def wanted_extras(settings: Settings, segments: Segments | None) -> set[str]:
    """The nightly tables beside recommendations this run computes: those in RECO_NIGHTLY_EXTRAS that the model can
    fill (no profiles without the model's segments)."""
    unfillable = {USER_PROFILES.name, USER_SEGMENTS.name} if segments is None else set()
    return set(settings.serving.nightly_extras) - unfillable


def score_users(
    sequences: DataFrame,
    day_item_ids: np.ndarray,
    settings: Settings,
    model: tuple[str, object],
    k: int,
    ds: dt.date,
    wanted: set[str],
) -> DataFrame:
    """Sequences -> one scored row per user with history (batch_scoring.SCORED_USER_SCHEMA), with the anomaly and
    segment columns only when the `wanted` extra tables need them. `model`: (its key, the Broadcast of its files)."""
    has_history = sequences.where(F.col("length") > 0)
    job = batch_scoring.ScoringJob(
        model_key=model[0],
        model_files=model[1],
        k=k,
        day_item_ids=day_item_ids,
        policy=settings.repeat_rule(),
        window=settings.sessionize.seq_len,
        day=day_bounds(ds) if USER_ANOMALIES.name in wanted else None,
        top_g=settings.serving.anomaly_top_g,
        profiles=bool({USER_PROFILES.name, USER_SEGMENTS.name} & wanted),
    )
    body = functools.partial(batch_scoring.score_partition, job=job)
    return has_history.mapInPandas(body, batch_scoring.SCORED_USER_SCHEMA)


def load(tables: dict[Table, Callable[[], DataFrame]], night: Path) -> None:
    """Each table's day, built and written into one staging folder for the night, the tables side by side (Spark
    runs the jobs of several driver threads concurrently, so one table's fixed costs overlap another's work), then
    the night committed whole: a crash leaves the previous night's tables, all of them; a table not written tonight
    is not in the new night."""
    staged = staging_path(night)

    def write(table: Table) -> None:
        frame = tables[table]()
        # Sorted within each partition, not globally: a global orderBy samples its input first, which would run
        # the scoring twice. The input files and their split are fixed, so the output files are byte-for-byte stable.
        frame.sortWithinPartitions(*table.key[1:]).write.mode("overwrite").parquet(str(staged / table.name))

    side_by_side([functools.partial(write, table) for table in tables])
    commit_folder(staged, night)


def nightly_tables(
    scored: DataFrame, settings: Settings, ds: dt.date, version: int, segments: Segments | None, wanted: set[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Every nightly table of the day from one scoring pass (kept while they are written), committed together as the
    night (`load`); publish checks that every table comes from one model version. A table left out of `wanted`
    (wanted_extras) is not part of the new night, so an older run's rows of it for the day are gone with it.
    Returns the rows written per table, and the recommendations per source (model, popular, repeat) with the users
    listed."""
    name, lake = settings.model.model_name, settings.lake
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with stage("recommend: score every user with history") as report:
            # The counts are the action that scores (and keeps) every user: no separate count job.
            listed = recommendation_counts(scored)
            report(users=listed.pop("scored"), listed=listed["users"])
        event_types = settings.sessionize.event_types
        extras = {
            USER_NEXT_BEHAVIOUR: lambda: next_behaviour_rows(scored, event_types, ds, name, version),
            USER_PROFILES: lambda: profile_rows(scored, ds, name, version),
            USER_SEGMENTS: lambda: segment_rows(scored, segments, ds, name, version),
            USER_ANOMALIES: lambda: anomaly_rows(scored, settings.serving.anomaly_percentile, ds, name, version),
        }
        tables = {table: rows for table, rows in extras.items() if table.name in wanted}
        tables[RECOMMENDATIONS] = lambda: recommendation_rows(scored, ds, name, version)
        with stage(f"recommend: write {', '.join(table.name for table in tables)} as one night"):
            load(tables, lake.nightly_dir(ds))
    finally:
        scored.unpersist()
    rows = {table.name: parquet_rows(lake.nightly_table_dir(table.name, ds)) for table in tables}
    return rows, listed


def recommendation_counts(scored: DataFrame) -> dict[str, int]:
    """Scored users -> their number (`scored`), those with at least one recommendation (`users`), and
    recommendations per source (one Spark job)."""
    per_source = [
        F.sum(F.size("sources") - F.size(F.array_remove("sources", source))).alias(source)
        for source in (SOURCE_MODEL, SOURCE_POPULAR, SOURCE_REPEAT)
    ]
    counts = scored.agg(
        F.count("*").alias("scored"), F.sum((F.size("item_ids") > 0).cast("long")).alias("users"), *per_source
    ).first()
    return {key: int(value or 0) for key, value in counts.asDict().items()}


def run(settings: Settings, ds: dt.date, version: int | None = None, k: int | None = None) -> dict:
    k = k or settings.serving.top_k
    started = time.time()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The registry read needs no Spark: it runs on a thread of its own while the JVM starts the session.
        model_read = pool.submit(extract_model, settings, version)
        spark = spark_session(settings.engines, "reco-recommend", quick_jit=quick_jit(settings, ds))
        version, model_files, trained_on = model_read.result()
    # One committed version of the day, read whole: the weekly training may re-sessionize the same day meanwhile.
    with pinned(settings.lake.sessionized_dir(ds), SessionizedDay.READ_PARTS) as pin:
        return recommend_pinned_day(
            settings, ds, SessionizedDay(pin), spark, version, model_files, trained_on, k, started
        )


def recommend_pinned_day(
    settings: Settings, ds: dt.date, day: SessionizedDay, spark, version, model_files, trained_on, k, started
) -> dict:
    day_vocabulary = extract_day_vocabulary(day)
    known = check_model_fits_day(settings, version, trained_on, *extract_day_events(day, day_vocabulary))
    with stage(f"recommend ds={ds} with {settings.model.model_name} v{version}, top-{k}") as report:
        sequences = extract_sequences(spark, day)
        wanted = wanted_extras(settings, trained_on.segments)
        model = broadcast_model(spark, settings, version, model_files)
        scored = score_users(sequences, vocabulary_item_ids(day_vocabulary), settings, model, k, ds, wanted)
        try:
            rows, listed = nightly_tables(scored, settings, ds, version, trained_on.segments, wanted)
        finally:
            model[1].destroy()
        report(**rows, **listed)
    summary = {
        "ds": ds.isoformat(),
        "model_version": version,
        "k": k,
        "users": listed["users"],
        "rows": rows[RECOMMENDATIONS.name],
        "known_share": round(known, 4),
        # What coverage divides by: the items the champion can recommend (its vocabulary), as MLflow's coverage does.
        "catalogue_items": catalogue_items(trained_on.vocabulary),
        "repeat_policy": settings.repeat_rule().describe(),
        "repeat_rows": listed[SOURCE_REPEAT],
        "next_behaviour_rows": rows.get(USER_NEXT_BEHAVIOUR.name, 0),
        "segmented_users": rows.get(USER_PROFILES.name, 0),
        "anomalous_users": rows.get(USER_ANOMALIES.name, 0),
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
