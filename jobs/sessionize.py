"""Step 1 — sessionize: raw events -> validated, de-duplicated events -> sessions -> padded sequences (Spark).

Reads   lake/raw/events/dt=*/ (every day up to --ds)
Writes  lake/sequences/ds=D/   one row per user: last L item indices (left-padded), event types, gap buckets
        lake/vocab/ds=D/       item_id <-> item_index (0 = padding, 1 = unknown item) with counts
        lake/quarantine/events/ds=D/  every rejected line with its raw text and a reason code
        lake/run_stats/sessionize/ds=D.json  read = valid + duplicates + quarantined

Run as `spark-submit jobs/sessionize.py --ds 2003-02-28`, `python -m jobs.sessionize --ds ...` or `reco sessionize`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from model_lib import events as ev
from model_lib.config import Settings, get_settings, parse_ds
from model_lib.lake import commit_folder, raw_partitions, staging_path, write_json
from model_lib.progress import stage
from model_lib.spark import spark_session

log = logging.getLogger("reco.sessionize")


# --- extract ---------------------------------------------------------------------------------------------
def extract_raw_lines(spark: SparkSession, settings: Settings, ds: dt.date) -> DataFrame:
    """All raw lines of the days up to ds, with their dt and an increasing input order."""
    partitions = raw_partitions(settings.raw_events_dir, ds)
    if not partitions:
        raise FileNotFoundError(f"no raw events at or before {ds} under {settings.raw_events_dir}")
    if partitions[-1].name != f"dt={ds.isoformat()}":
        log.warning("no raw events for dt=%s: sequences are built from the history up to %s", ds, partitions[-1].name)
        print(f"[reco] no raw events for dt={ds}; using the history up to {partitions[-1].name}", flush=True)
    # Reading the base folder and filtering on dt prunes partitions without listing each day as its own path.
    lines = spark.read.text(str(settings.raw_events_dir)).where(F.col("dt") <= F.lit(ds))
    return lines.select(
        F.col("value").alias("line"),
        F.col("dt").cast("string").alias("dt"),
        F.monotonically_increasing_id().alias("line_order"),
    )


# --- transform -------------------------------------------------------------------------------------------
def validate_lines(lines: DataFrame, settings: Settings) -> DataFrame:
    return ev.validate(ev.parse_raw_lines(lines), settings.event_types)


def sequences_from_events(valid_events: DataFrame, vocabulary: DataFrame, settings: Settings) -> DataFrame:
    sessions = ev.sessionize(valid_events, settings.session_gap_minutes, settings.max_gap_bucket)
    indexed = ev.index_events(sessions, vocabulary, settings.event_types)
    return ev.last_events_as_sequences(indexed, settings.seq_len)


# --- load ------------------------------------------------------------------------------------------------
def write_folder(frame: DataFrame, final: Path, partitions: int = 1) -> None:
    staged = staging_path(final)
    frame.coalesce(partitions).write.mode("overwrite").parquet(str(staged))
    commit_folder(staged, final)


def run(settings: Settings, ds: dt.date, spark: SparkSession | None = None) -> dict:
    spark = spark or spark_session(settings, "reco-sessionize")
    with stage(f"sessionize ds={ds}: validate") as report:
        validated = validate_lines(extract_raw_lines(spark, settings, ds), settings).cache()
        by_reason = {row["reason"]: row["count"] for row in validated.groupBy("reason").count().collect()}
        read = sum(by_reason.values())
        quarantined = {reason: count for reason, count in by_reason.items() if reason is not None}
        report(read=read, quarantined=sum(quarantined.values()))
    with stage("sessionize: deduplicate + vocabulary") as report:
        valid_events = ev.deduplicate(validated.where(F.col("reason").isNull())).cache()
        valid = valid_events.count()
        vocabulary = ev.build_vocabulary(valid_events, settings.min_item_count).cache()
        vocab_size = vocabulary.count()
        report(valid=valid, duplicates=by_reason.get(None, 0) - valid, vocabulary=vocab_size)
    stats = {
        "ds": ds.isoformat(),
        "read": read,
        "valid": valid,
        "duplicates": by_reason.get(None, 0) - valid,
        "quarantined": sum(quarantined.values()),
        "quarantined_by_reason": quarantined,
        "vocabulary_size": vocab_size,
    }
    if stats["read"] != stats["valid"] + stats["duplicates"] + stats["quarantined"]:
        raise RuntimeError(f"counts do not reconcile: {stats}")
    with stage("sessionize: write quarantine, vocabulary, sequences") as report:
        write_folder(ev.quarantine_rows(validated), settings.quarantine_dir(ds))
        write_folder(vocabulary.orderBy("item_index"), settings.vocab_dir(ds))
        sequences = sequences_from_events(valid_events, vocabulary, settings)
        write_folder(sequences.orderBy("user_id"), settings.sequences_dir(ds), partitions=2)
        stats["users"] = spark.read.parquet(str(settings.sequences_dir(ds))).count()
        report(users=stats["users"], path=str(settings.sequences_dir(ds)))
    write_json(settings.sessionize_stats_path(ds), stats)
    print(f"[reco] sessionize stats {stats}", flush=True)
    validated.unpersist()
    valid_events.unpersist()
    return stats


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD: events up to this day are used")
    args = parser.parse_args(argv)
    return run(get_settings(), parse_ds(args.ds))


if __name__ == "__main__":
    main()
