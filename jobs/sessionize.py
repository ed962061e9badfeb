"""Step 1 — sessionize: raw events -> validated, de-duplicated events -> per-user sequences (Spark).

Two modes, same result (a test checks that they agree exactly):
- incremental (the nightly default): reads only raw dt=D plus the state written for D-1;
- full rebuild (a backfill, the first run, or a changed L / validation rule): reads every raw day up to D.
`--mode auto` (the default) runs incrementally when D-1's state exists and was built with the same settings.

Reads   lake/raw/events/dt=D/ (incremental) or dt<=D/ (full); lake/sessionized/ds=D-1/ (state, sequences, vocabulary)
Writes  lake/sessionized/ds=D/, one unit committed by one atomic swap:
          sequences/     one row per user: last L events (left-padded) — see docs/your-data.md
          vocab/         item_id <-> item_index, stable across days
          day_item_counts/  the day's own valid new events per item_id (what the nightly model-fit check weighs)
          state/         users (last L+1 events, older items: one layer per night, see model_lib/data/state.py),
                         dedup_keys, item_counts
          manifest.json  written last: ds, mode, the settings the state was built with, row counts
        lake/quarantine/events/dt=X/   every rejected line with its raw text and a reason code
        lake/run_stats/sessionize/ds=D/  read = valid + duplicates + quarantined, per run
A crash at any moment leaves the previous complete day (sequences, vocabulary and state of one run, never mixed).

Run as `spark-submit jobs/sessionize.py --ds 2003-02-28`, `python -m jobs.sessionize --ds ...` or `reco sessionize`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from model_lib.config import SESSIONIZE_MODES, Settings, get_settings, parse_ds
from model_lib.contracts import EVENT_FIELDS, REASON_CODES, SEQUENCE_COLUMNS, STATE_COLUMNS
from model_lib.data import events as ev
from model_lib.data import raw_events
from model_lib.data.state import Plan, StoredState, compacted, plan_run, read_previous_state, write_day
from model_lib.data.vocabulary import (
    VOCABULARY_COLUMNS,
    changed_items,
    new_vocabulary,
    running_item_counts,
    top_item_counts,
)
from model_lib.progress import say, stage
from model_lib.runtime import driver_java_options
from model_lib.storage.lake import (
    commit_folder,
    misnamed_folders,
    raw_partitions,
    read_parquet_folder,
    remove_dead_leftovers,
    staging_path,
    unreadable_reason,
    visible_files,
    write_run_stats,
)
from model_lib.storage.spark import size_shuffles, spark_session

SEQUENCE_FILES = 2  # the sequences of a day, for the readers (training reads them file by file)


# --- plan: which night, and the JVM it needs ----------------------------------------------------------
def quick_jit(settings: Settings, plan: Plan) -> bool:
    """Whether the night's JVM compiles with the JIT's quick tier only (runtime.driver_java_options): an incremental
    night reads one day and lives seconds; a full rebuild reads every day and needs the optimizing tier."""
    return settings.engines.spark_quick_jit and plan.mode == "incremental"


def night_java_options(settings: Settings, ds: dt.date, mode: str) -> str:
    """The driver JVM options of the night `plan_run` will plan, for spark-submit's command line (the DAG renders
    them when the task starts): inside the job the JVM is already running."""
    return driver_java_options(quick_jit=quick_jit(settings, plan_run(settings, ds, mode)))


# --- extract ---------------------------------------------------------------------------------------------
def extract_raw_lines(spark: SparkSession, settings: Settings, ds: dt.date, plan: Plan) -> DataFrame:
    """Incremental: the lines of dt=ds. Full: every day up to ds. Each line keeps its dt, file and position.

    A raw file that cannot be read to its end (a truncated `.gz`, or one that is not gzip) would fail Spark's read of
    the whole day, every retry and every later rebuild: it is left out of the read and stands in the lines as one
    row that validation quarantines as `unreadable_file`, with its path and the error."""
    raw_dir = settings.lake.raw_events_dir
    if plan.mode == "full":
        folders = raw_partitions(raw_dir, ds)
        if not folders:
            raise FileNotFoundError(f"no raw events at or before {ds} under {raw_dir}")
    else:
        day = settings.lake.raw_events_day_dir(ds)
        folders = [day] if day.is_dir() and visible_files(day) else []
        if not folders:
            say(f"no raw events for dt={ds}: the users' sequences carry over unchanged")
            return spark.createDataFrame([], raw_events.LOCATED_LINE_SCHEMA)
    unreadable = unreadable_raw_files(folders)
    if plan.mode == "full" and not unreadable:
        # Reading the base folder and filtering on dt prunes partitions without listing each day as its own path.
        # Only folders named by a date are raw days (raw_partitions): a stray `dt=garbage` is no day of events.
        days = [folder.name.removeprefix("dt=") for folder in folders]
        frame = spark.read.text(str(raw_dir)).where(F.col("dt").cast("string").isin(days))
    else:
        left_out = {path for path, _ in unreadable}
        readable = [str(path) for folder in folders for path in visible_files(folder) if path not in left_out]
        frame = spark.read.option("basePath", str(raw_dir)).text(readable) if readable else None
    lines = (
        raw_events.located_lines(frame)
        if frame is not None
        else spark.createDataFrame([], raw_events.LOCATED_LINE_SCHEMA)
    )
    if unreadable:
        whole_files = [(path.parent.name.removeprefix("dt="), path.as_uri(), why) for path, why in unreadable]
        lines = lines.unionByName(raw_events.unreadable_file_lines(spark, whole_files))
    return lines


def unreadable_raw_files(folders: list[Path]) -> list[tuple[Path, str]]:
    """(path, why) of every raw file in `folders` that cannot be read to its end, each said on one line."""
    files = [path for folder in folders for path in visible_files(folder)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # zlib frees the GIL
        reasons = list(pool.map(unreadable_reason, files))
    unreadable = [(path, why) for path, why in zip(files, reasons, strict=True) if why is not None]
    for path, why in unreadable:
        say(
            f"quarantined the unreadable raw file {path} ({why}) as one row, reason unreadable_file; the day's "
            "other files are processed. Replace it with a complete copy and re-run the day to read its events."
        )
    return unreadable


# --- transform -------------------------------------------------------------------------------------------
def dedup_horizon(settings: Settings, ds: dt.date):
    """Keys with ts before this can no longer be repeated by a later day (see events.recent_keys)."""
    next_day = F.to_timestamp(F.lit((ds + dt.timedelta(days=1)).isoformat()))
    return next_day - F.make_dt_interval(hours=F.lit(settings.sessionize.allowed_lateness_hours))


# --- load ------------------------------------------------------------------------------------------------
def write_quarantine(quarantine: DataFrame, settings: Settings, days: list[str]) -> None:
    """Replaces quarantine/events/dt=X for every raw day this run read (a day with no rejects ends up empty)."""
    staged = staging_path(settings.lake.quarantine_root / "batch")
    quarantine.repartition(1, "dt").write.partitionBy("dt").mode("overwrite").parquet(str(staged))
    for day in days:
        final, produced = settings.lake.quarantine_dir(dt.date.fromisoformat(day)), staged / f"dt={day}"
        if produced.exists():
            commit_folder(produced, final)
        elif final.exists():
            commit_folder(_empty_folder(final), final)
    shutil.rmtree(staged, ignore_errors=True)
    remove_dead_leftovers(settings.lake.quarantine_root / "batch")


def _empty_folder(final: Path) -> Path:
    empty = staging_path(final)
    empty.mkdir()
    return empty


def write_sessionize_stats(stats: dict, settings: Settings, ds: dt.date) -> None:
    """One row per ds in the run-stats table (Parquet; query it with DuckDB or Spark)."""
    row = {key: value for key, value in stats.items() if key != "quarantined_by_reason"}
    row.update({f"quarantined_{code}": stats["quarantined_by_reason"].get(code, 0) for code in REASON_CODES})
    write_run_stats(row, settings.lake.run_stats_dir("sessionize", ds))


def run_stats(
    ds, plan: Plan, days_read: list[str], by_reason: dict, valid: int, vocabulary, previous_vocabulary
) -> dict:
    """The run-stats row: read = valid + duplicates + quarantined, and the vocabulary's churn."""
    quarantined = {reason: count for reason, count in by_reason.items() if reason is not None}
    read = sum(by_reason.values())
    previous_items = set(previous_vocabulary["item_id"]) if previous_vocabulary is not None else set()
    return {
        "ds": ds.isoformat(),
        "mode": plan.mode,
        "days_read": len(days_read),
        "read": read,
        "valid": valid,
        "duplicates": by_reason.get(None, 0) - valid,
        "quarantined": sum(quarantined.values()),
        "quarantined_by_reason": quarantined,
        "quarantined_share": round(sum(quarantined.values()) / read, 6) if read else 0.0,
        "vocabulary_size": len(vocabulary),
        "items_new_in_vocabulary": len(set(vocabulary["item_id"]) - previous_items)
        if previous_items
        else len(vocabulary),
        "items_left_vocabulary": len(previous_items - set(vocabulary["item_id"])),
    }


def refuse_too_much_quarantine(
    stats: dict, settings: Settings, ds: dt.date, started: float, write_rejects: Callable[[], None]
) -> None:
    """Above max_quarantine_share the run writes the rejected lines (`write_rejects`), records itself as failed and
    stops before sequences, vocabulary or state."""
    quarantined, read = stats["quarantined_by_reason"], stats["read"]
    if stats["quarantined_share"] > settings.sessionize.max_quarantine_share:
        with stage("sessionize: write quarantine") as report:
            write_rejects()
            report(rows=stats["quarantined"], path=str(settings.lake.quarantine_root))
        write_sessionize_stats(
            {**stats, "status": "failed", "users": 0, "seconds": round(time.time() - started, 1)}, settings, ds
        )
        raise ValueError(
            f"sessionize ds={ds}: {stats['quarantined']:,} of {read:,} lines ({stats['quarantined_share']:.1%}) were "
            f"quarantined {quarantined}, above max_quarantine_share={settings.sessionize.max_quarantine_share:.1%}. "
            f"Nothing else was written. Inspect {settings.lake.quarantine_root}, fix the producer, or raise "
            "RECO_MAX_QUARANTINE_SHARE for this run."
        )


def ordered_histories(spark, settings: Settings, previous: StoredState | None, events, vocabulary_frame, changed):
    """The sessions and last L events of every user (a full build) or of the users the day touched, merged with their
    stored rows (a night) -> (the cached histories, how many). `changed`: the items whose index moved since the
    stored vocabulary (their users are re-encoded too)."""
    rules = ev.SequenceRules.of(settings.sessionize)
    stored = None  # a full build orders every event; a night, the day's and its touched users' stored ones
    if previous is not None:
        changed_frame = spark.createDataFrame([(item,) for item in changed], "item_id string") if changed else None
        # Cached while the histories are computed: the ordering reads these rows three times (their events, and
        # their older items for two lookups), and each read would scan the state and pick the newest layer again.
        stored = ev.touched_state(previous.users, events, changed_frame).cache()
    histories = ev.user_histories(events, vocabulary_frame, rules, stored).cache()
    touched = histories.count()  # computes the cache once, before the writes read it side by side
    if stored is not None:
        stored.unpersist()
    return histories, touched


def write_histories(
    spark,
    settings: Settings,
    ds: dt.date,
    plan: Plan,
    previous: StoredState | None,
    events,
    counts,
    vocabulary,
    previous_vocabulary,
    write_rejects: Callable[[], None],
):
    """Sessions and the last L events per user (a full build, or the users the day touched merged from yesterday's
    state), written with the vocabulary and tonight's state layer as one committed day; the rejected lines
    (`write_rejects`) are written beside them and committed before the day. Returns the cached histories (the
    users recomputed tonight) and the manifest's row counts."""
    with stage("sessionize: sessions + last L per user; write the day and the quarantine") as report:
        vocabulary_frame = spark.createDataFrame(
            vocabulary[VOCABULARY_COLUMNS], "item_id string, item_index int, count long"
        )
        histories, touched = ordered_histories(
            spark,
            settings,
            previous,
            events,
            vocabulary_frame,
            changed_items(previous_vocabulary, vocabulary) if previous is not None else [],
        )
        sequences = histories.select(SEQUENCE_COLUMNS)
        if previous is not None:
            sequences = ev.carried_sequences(previous.sequences, histories).unionByName(sequences)
        compacting = plan.compacts(touched)
        keys = events.select("dedup_key", "event_ts")
        if previous is not None:
            keys = keys.unionByName(previous.dedup_keys)
        rows = write_day(
            {
                # Hash-partitioned and sorted within each file, not sorted globally (which samples its input in a
                # job of its own): the files are the same whichever way the histories were computed.
                "sequences": sequences.repartition(SEQUENCE_FILES, "user_id").sortWithinPartitions("user_id"),
                "vocab": vocabulary_frame.coalesce(1).sortWithinPartitions("item_index"),
                "day_item_counts": top_item_counts(
                    events.where(F.col("arrival.dt") == ds.isoformat()), settings.sessionize.max_vocab_size
                ).coalesce(1),
                "users": compacted(previous.users, histories) if compacting else histories.select(STATE_COLUMNS),
                "dedup_keys": raw_events.recent_keys(keys, dedup_horizon(settings, ds)),
                "item_counts": counts,
            },
            settings,
            ds,
            plan,
            compacting,
            alongside=[write_rejects],
        )
        report(users=rows["users"], recomputed=touched, state_layers=len(rows["state_layers"]), compacted=compacting)
        say(f"sessionize: the day is {settings.lake.sessionized_dir(ds)}")
    return histories, rows


def validated_lines(spark, settings: Settings, ds: dt.date, plan: Plan, days_read: list[str]):
    """The raw lines of the run, each judged by the rules -> (the cached validated lines, lines per reason, None for
    valid), with the session's shuffles sized to the lines read."""
    with stage(f"sessionize ds={ds}: validate") as report:
        lines = extract_raw_lines(spark, settings, ds, plan)
        validated = raw_events.validate(
            raw_events.parse_raw_lines(lines), raw_events.ValidationRules.of(settings.sessionize)
        )
        # Only rejected lines need their raw text and file path any more; dropping them from the rest keeps the
        # cache small.
        rejected = F.col("reason").isNotNull()
        validated = validated.withColumns(
            {"line": F.when(rejected, F.col("line")), "source_file": F.when(rejected, F.col("source_file"))}
        ).cache()
        by_reason = {row["reason"]: row["count"] for row in validated.groupBy("reason").count().collect()}
        read = sum(by_reason.values())
        quarantined = {reason: count for reason, count in by_reason.items() if reason is not None}
        # What follows shuffles the lines read (a night also its touched users' stored events: a day's worth).
        partitions = size_shuffles(spark, settings.engines, read)
        report(days=len(days_read), read=read, quarantined=sum(quarantined.values()), shuffle_partitions=partitions)

    return validated, by_reason


def valid_events(validated, previous: StoredState | None, settings: Settings, ds: dt.date, plan: Plan, by_reason):
    """De-duplicated valid events (against yesterday's keys on a night) -> (the cached events, how many, the running
    item counts, the day's vocabulary, yesterday's vocabulary or None)."""
    with stage("sessionize: deduplicate + vocabulary") as report:
        events = raw_events.deduplicate(validated.where(F.col("reason").isNull()))
        if previous is not None:
            events = raw_events.drop_seen(events, previous.dedup_keys)
        events = events.select("user_id", *EVENT_FIELDS, "dedup_key").cache()
        valid = events.count()
        counts = running_item_counts(
            events,
            previous.item_counts if previous else None,
            ds,
            settings.sessionize.min_item_count,
            settings.sessionize.item_count_idle_days,
        ).cache()
        previous_vocabulary = read_parquet_folder(plan.previous_vocabulary) if plan.previous_vocabulary else None
        vocabulary = new_vocabulary(counts, settings.sessionize, previous_vocabulary)
        report(valid=valid, duplicates=by_reason.get(None, 0) - valid, vocabulary=len(vocabulary))

    return events, valid, counts, vocabulary, previous_vocabulary


def run(
    settings: Settings, ds: dt.date, spark: SparkSession | None = None, mode: str | None = None, compact: bool = False
) -> dict:
    started = time.time()
    plan = plan_run(settings, ds, mode or settings.sessionize.sessionize_mode, compact)
    say(f"sessionize ds={ds}: {plan.mode} ({plan.why})")
    spark = spark or spark_session(settings.engines, "reco-sessionize", quick_jit=quick_jit(settings, plan))
    previous = read_previous_state(spark, plan)
    days_read = (
        [ds.isoformat()]
        if plan.mode == "incremental"
        else [p.name[3:] for p in raw_partitions(settings.lake.raw_events_dir, ds)]
    )
    misnamed = misnamed_folders(settings.lake.raw_events_dir, "dt")
    if misnamed:
        say(
            f"ignored {len(misnamed)} raw folder(s) whose name is not dt=YYYY-MM-DD: {', '.join(misnamed)} "
            "(no reader takes them for a day; rename each to the day it holds)"
        )

    validated, by_reason = validated_lines(spark, settings, ds, plan, days_read)
    events, valid, counts, vocabulary, previous_vocabulary = valid_events(
        validated, previous, settings, ds, plan, by_reason
    )
    stats = run_stats(ds, plan, days_read, by_reason, valid, vocabulary, previous_vocabulary)
    stats["users_over_day_events"] = ",".join(
        ev.users_over_day_events(events, ds, settings.sessionize.max_user_day_events)
    )
    if stats["read"] != stats["valid"] + stats["duplicates"] + stats["quarantined"]:
        raise RuntimeError(f"counts do not reconcile: {stats}")

    write_rejects = functools.partial(write_quarantine, raw_events.quarantine_rows(validated), settings, days_read)
    refuse_too_much_quarantine(stats, settings, ds, started, write_rejects)
    histories, rows = write_histories(
        spark, settings, ds, plan, previous, events, counts, vocabulary, previous_vocabulary, write_rejects
    )
    stats["users"] = rows["users"]
    stats["ignored_folders"] = ",".join(misnamed)
    stats.update(status="succeeded", seconds=round(time.time() - started, 1))
    write_sessionize_stats(stats, settings, ds)
    say(f"sessionize stats {json.dumps(stats, default=str)}")
    for frame in (validated, events, counts, histories):
        frame.unpersist()
    return stats


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD: events up to this day are used")
    parser.add_argument("--mode", choices=SESSIONIZE_MODES, help="default: RECO_SESSIONIZE_MODE (auto)")
    parser.add_argument(
        "--compact", action="store_true", help="fold the users' state layers into one tonight (incremental runs)"
    )
    args = parser.parse_args(argv)
    return run(get_settings(), parse_ds(args.ds), mode=args.mode, compact=args.compact)


if __name__ == "__main__":
    main()
