"""Sessionization benchmark: Spark full rebuild vs one incremental nightly day vs the same logic in DuckDB SQL.

    .venv/bin/python -m bench.sessionize_bench                    # histories of 1M, 5M and 10M events, 30 days
    .venv/bin/python -m bench.sessionize_bench --events 1000000   # one size

For each history size it writes a seeded synthetic clickstream (reused when already there) whose last day is cut
to the same number of raw lines whatever the history (--day-events, default 30,000: about a 1M history's own day),
so that the incremental nights of the three sizes differ only in how much history lies behind them. Then it runs,
each in its own process so that peak memory (RSS of the process and its children, e.g. Spark's JVM) is measured
per run:
  1. Spark full rebuild up to the day before the last (this makes the state the nightly run continues from),
  2. Spark incremental nightly run for the last day (its users' state a layer of the touched users), then the same
     night again folding the state's layers into one (`--compact`: what a night costs when it compacts),
  3. Spark full rebuild up to the last day (the reference; for sizes above --check-equality-up-to the rebuild of
     step 1 stands in for it, to save a run),
  4. DuckDB: validation + de-duplication + sessionization + last-L in SQL over the same raw files, up to the last day.
  5. Spark's floor: a fresh process that starts a session, reads the last day's raw lines, counts them and writes
     them to one Parquet folder (no rule applied): what any Spark night costs on this machine.
It checks that 2 and 3 wrote identical sequences (when 3 ran) and that DuckDB found the same users and events, and
prints one JSON line per size with events/s, the ratios incremental / full (targets <= 0.35 at 1M, <= 0.2 at 10M)
and Spark / DuckDB (target <= 3 at 10M), and peak memory; then one line with the incremental night's seconds per
history size (the same day each time: its cost should follow the day, not the history).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import results
from bench.memory import PeakRss
from model_lib.config import PROJECT_ROOT, get_settings
from model_lib.data.sources import SynthSpec, write_synth
from model_lib.runtime import engine_environment

DAYS = 30
SESSION_ID = re.compile(r'"session_id":"([^"]*)"')
DUCKDB_SQL = """
CREATE TEMP TABLE lines AS
SELECT line, CAST(dt AS VARCHAR) AS dt, filename, row_number() OVER () AS line_order
FROM read_csv('{raw}/dt=*/*.jsonl.gz', columns = {{'line': 'VARCHAR'}}, delim = '\x1f', quote = '', escape = '',
              header = false, auto_detect = false, filename = true, hive_partitioning = true,
              -- a line that is not UTF-8 (the job's bad_encoding) is rejected here; counted from reject_errors
              ignore_errors = true, store_rejects = true)
WHERE dt <= DATE '{ds}';

CREATE TEMP TABLE validated AS
WITH fields AS (
    SELECT *, starts_with(ltrim(line), '{{') AND json_valid(line) AS is_json,
           CASE WHEN json_valid(line) THEN json_extract_string(line, ['$.user_id', '$.item_id', '$.event_type',
                '$.ts', '$.event_id', '$.session_id']) END AS f
    FROM lines
), typed AS (
    SELECT line, dt, filename, line_order, is_json,
           nullif(trim(f[1]), '') AS user_id, nullif(trim(f[2]), '') AS item_id, nullif(trim(f[3]), '') AS event_type,
           nullif(trim(f[4]), '') AS ts, nullif(trim(f[5]), '') AS event_id, nullif(trim(f[6]), '') AS session_id
    FROM fields
), timed AS (
    SELECT *, CASE WHEN regexp_full_match(ts, '-?[0-9]{{1,19}}')
                   THEN CASE WHEN TRY_CAST(ts AS BIGINT) BETWEEN -62135596800000 AND 253402300799999
                             THEN epoch_ms(TRY_CAST(ts AS BIGINT))::TIMESTAMP END
                   ELSE TRY_CAST(TRY_CAST(ts AS TIMESTAMPTZ) AS TIMESTAMP) END AS event_ts
    FROM typed
)
SELECT *, CASE
    WHEN length(line) > {max_line} OR length(user_id) > {max_id} OR length(item_id) > {max_id}
         OR length(event_id) > {max_id} OR length(session_id) > {max_id} THEN 'too_long'
    WHEN NOT is_json THEN 'not_json'
    WHEN user_id IS NULL OR item_id IS NULL OR event_type IS NULL OR ts IS NULL THEN 'missing_field'
    WHEN regexp_matches(concat(user_id, item_id, event_id, session_id), '[\\x00-\\x1F\\x7F]') THEN 'bad_id'
    WHEN event_ts IS NULL THEN 'bad_ts'
    WHEN event_type NOT IN ({event_types}) THEN 'unknown_event_type'
    WHEN event_ts >= CAST(dt AS TIMESTAMP) + INTERVAL 1 DAY + INTERVAL {future} MINUTE THEN 'future_ts'
    WHEN event_ts < CAST(dt AS TIMESTAMP) - INTERVAL {lateness} HOUR THEN 'too_late'
END AS reason
FROM timed;

CREATE TEMP TABLE events AS
SELECT * EXCLUDE (occurrence) FROM (
    SELECT *, row_number() OVER (
        PARTITION BY coalesce('id:' || event_id,
                              concat_ws(chr(1), 't', user_id, item_id, event_type, event_ts::VARCHAR))
        ORDER BY dt, filename, line_order) AS occurrence
    FROM validated WHERE reason IS NULL
) WHERE occurrence = 1;

CREATE TEMP TABLE vocabulary AS
SELECT item_id, (row_number() OVER (ORDER BY n DESC, item_id) + 1)::INTEGER AS item_index
FROM (SELECT item_id, count(*) AS n FROM events GROUP BY item_id) WHERE n >= {min_count}
ORDER BY n DESC, item_id LIMIT {max_size};

CREATE TEMP TABLE sequences AS
WITH ranked AS (
    SELECT e.user_id, coalesce(v.item_index, 1) AS item_index,
           list_position([{event_types}], e.event_type) AS type_index,
           e.event_ts, e.session_id,
           row_number() OVER w AS recency,
           epoch(e.event_ts) - epoch(lead(e.event_ts) OVER w) AS gap,
           lead(e.event_ts) OVER w IS NULL OR epoch(e.event_ts) - epoch(lead(e.event_ts) OVER w) > {gap_seconds}
               OR (e.session_id IS DISTINCT FROM lead(e.session_id) OVER w) AS starts,
           count(*) OVER (PARTITION BY e.user_id) AS n
    FROM events e LEFT JOIN vocabulary v USING (item_id)
    WINDOW w AS (PARTITION BY e.user_id ORDER BY e.event_ts DESC, e.dt DESC, e.filename DESC, e.line_order DESC)
), sessions AS (
    SELECT *, 1 + sum(CASE WHEN recency <= {seq_len} AND recency < least(n, {seq_len}) AND starts THEN 1 ELSE 0 END)
                  OVER (PARTITION BY user_id ORDER BY recency ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)
               AS session_index,
           CASE WHEN gap IS NULL THEN 1 ELSE least(2 + floor(log2(greatest(gap, 0) + 1))::INTEGER, {max_bucket}) END
               AS gap_bucket
    FROM ranked
)
SELECT user_id,
       list(item_index ORDER BY recency DESC) FILTER (WHERE recency <= {seq_len}) AS item_indices,
       list(type_index ORDER BY recency DESC) FILTER (WHERE recency <= {seq_len}) AS event_type_indices,
       list(gap_bucket ORDER BY recency DESC) FILTER (WHERE recency <= {seq_len}) AS gap_buckets,
       list(session_index ORDER BY recency DESC) FILTER (WHERE recency <= {seq_len}) AS session_indices,
       count(*) FILTER (WHERE recency <= {seq_len}) AS length,
       list(DISTINCT item_index ORDER BY item_index) FILTER (WHERE recency > {seq_len}) AS older_item_indices,
       max(event_ts) AS last_event_ts
FROM sessions GROUP BY user_id;

COPY (SELECT * FROM sequences ORDER BY user_id) TO '{output}' (FORMAT parquet);
"""


def duckdb_sessionize(data_dir: Path, ds: dt.date, output: Path) -> dict:
    """The reference: the sessionize job's rules (full rebuild) in one DuckDB SQL script."""
    import duckdb

    settings = get_settings(data_dir=data_dir)
    started = time.time()
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'; SET threads = 2; SET preserve_insertion_order = true")
    connection.execute(
        DUCKDB_SQL.format(
            raw=settings.lake.raw_events_dir,
            ds=ds.isoformat(),
            output=output,
            max_line=settings.sessionize.max_line_chars,
            max_id=settings.sessionize.max_id_chars,
            event_types=", ".join(f"'{t}'" for t in settings.sessionize.event_types),
            future=settings.sessionize.future_tolerance_minutes,
            lateness=settings.sessionize.allowed_lateness_hours,
            min_count=settings.sessionize.min_item_count,
            max_size=settings.sessionize.max_vocab_size,
            gap_seconds=settings.sessionize.session_gap_minutes * 60,
            seq_len=settings.sessionize.seq_len,
            max_bucket=settings.sessionize.max_gap_bucket,
        )
    )
    counts = connection.execute("SELECT count(*), count(*) FILTER (WHERE reason IS NOT NULL) FROM validated").fetchone()
    not_utf8 = connection.execute("SELECT count(DISTINCT (scan_id, file_id, line)) FROM reject_errors").fetchone()[0]
    valid = connection.execute("SELECT count(*) FROM events").fetchone()[0]
    return {
        "read": counts[0] + not_utf8,
        "quarantined": counts[1] + not_utf8,
        "valid": valid,
        "duplicates": counts[0] - counts[1] - valid,
        "users": connection.execute("SELECT count(*) FROM sequences").fetchone()[0],
        "seconds": round(time.time() - started, 1),
    }


def measured(command: list[str], env: dict[str, str]) -> dict:
    """Runs a command; returns wall seconds, peak RSS (MiB) of its process tree, of the command's own (Python driver)
    process and of its JVM children, and its last JSON line. What the Python driver collects shows in its own RSS;
    in local mode the JVM is driver and executors at once, its heap capped by spark.driver.memory."""
    started = time.time()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakRss(process.pid) as peak:
        output = process.stdout.read()
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-4000:]}")
    result = [
        line for line in output.splitlines() if line.startswith("[reco] sessionize stats ") or line.startswith("{")
    ]
    payload = json.loads(result[-1].removeprefix("[reco] sessionize stats "))
    return {
        **payload,
        "wall_seconds": round(time.time() - started, 1),
        "peak_rss_mib": peak.tree,
        "python_driver_peak_rss_mib": peak.own,
        "jvm_peak_rss_mib": peak.jvm,
    }


def spark_environment(data_dir: Path) -> dict[str, str]:
    return {**os.environ, **engine_environment(get_settings(data_dir=data_dir).engines), "RECO_DATA_DIR": str(data_dir)}


def spark_run(data_dir: Path, ds: dt.date, mode: str, *options: str) -> dict:
    command = [sys.executable, "-m", "jobs.sessionize", "--ds", ds.isoformat(), "--mode", mode, *options]
    return measured(command, spark_environment(data_dir))


def spark_floor(data_dir: Path, ds: dt.date) -> dict:
    """Run in its own process: session start, the day's raw lines read, counted and written as they are."""
    from model_lib.storage.spark import spark_session

    started = time.time()
    settings = get_settings(data_dir=data_dir)
    spark = spark_session(settings.engines, "reco-bench-floor")
    lines = spark.read.text(str(settings.lake.raw_events_day_dir(ds)))
    read = lines.count()
    lines.write.mode("overwrite").parquet(str(data_dir / "floor-lines"))
    return {"read": read, "seconds": round(time.time() - started, 1)}


def counts_agree(duck: dict, spark: dict) -> dict[str, bool]:
    return {key: duck[key] == spark[key] for key in ("read", "quarantined", "valid", "duplicates", "users")}


def cut_day(day_folder: Path, lines: int, seed: int = 3) -> int:
    """Keeps about `lines` of the day's raw lines, in their order, as whole sessions drawn at random (seeded), so
    that the day looks like a smaller day of the same site rather than a thinned one: the same day size, and about
    the same number of users, whatever the history. Lines without a readable session_id count as sessions of one."""
    files = sorted(day_folder.glob("*.jsonl.gz"))
    with gzip.open(files[0], "rt", encoding="utf-8", errors="surrogateescape") as handle:
        day = handle.read().splitlines()
    if len(day) > lines:
        sessions = [match.group(1) if (match := SESSION_ID.search(line)) else f"line {n}" for n, line in enumerate(day)]
        codes = np.unique(sessions, return_inverse=True)[1]
        sizes = np.bincount(codes)
        order = np.random.default_rng(seed).permutation(len(sizes))
        chosen = order[: int(np.searchsorted(np.cumsum(sizes[order]), lines)) + 1]
        keep = np.isin(codes, chosen)
        day = [line for line, kept in zip(day, keep, strict=True) if kept]
    with gzip.open(files[0], "wt", encoding="utf-8", errors="surrogateescape", compresslevel=1) as handle:
        handle.write("\n".join(day) + "\n")
    return len(day)


def day_users(day_folder: Path) -> int:
    """Distinct users among the day's well-formed lines (the users its incremental night has to touch)."""
    users = set()
    for file in day_folder.glob("*.jsonl.gz"):
        with gzip.open(file, "rt", encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                try:
                    users.add(json.loads(line).get("user_id"))
                except (json.JSONDecodeError, AttributeError):
                    continue
    return len(users - {None})


def bench_size(events: int, root: Path, check_equality: bool, day_events: int) -> dict:
    data_dir = root / f"events-{events}-day-{day_events}"
    settings = get_settings(data_dir=data_dir)
    spec = SynthSpec.for_events(events, DAYS)
    last_day = spec.start + dt.timedelta(days=DAYS - 1)
    made = data_dir / "synthesised.json"
    if not made.exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        started = time.time()
        write_synth(spec, settings.lake.raw_events_dir)
        day_lines = cut_day(settings.lake.raw_events_day_dir(last_day), day_events)
        made.write_text(json.dumps({"events": events, "day": str(last_day), "day_lines": day_lines}))
        print(f"[bench] synthesised {events:,} events in {time.time() - started:.1f} s", flush=True)
    print(f"[bench] {events:,} events: Spark full rebuild to {last_day - dt.timedelta(days=1)} (makes the state)")
    previous = spark_run(data_dir, last_day - dt.timedelta(days=1), "full")
    print(f"[bench] {events:,} events: Spark incremental {last_day}", flush=True)
    incremental = spark_run(data_dir, last_day, "incremental")
    layers = json.loads((settings.lake.sessionized_dir(last_day) / "manifest.json").read_text())["rows"]
    incremental_sequences = data_dir / "incremental-sequences"
    shutil.rmtree(incremental_sequences, ignore_errors=True)
    shutil.copytree(settings.lake.sequences_dir(last_day), incremental_sequences)
    print(f"[bench] {events:,} events: Spark incremental {last_day} again, compacting the state", flush=True)
    compacting = spark_run(data_dir, last_day, "incremental", "--compact")
    incremental_frame = pd.read_parquet(incremental_sequences)
    compacted_same = incremental_frame.equals(pd.read_parquet(settings.lake.sequences_dir(last_day)))
    print(f"[bench] {events:,} events: Spark floor (start, read the day, write it)", flush=True)
    floor = measured(
        [sys.executable, "-m", "bench.sessionize_bench", "--floor-only", str(data_dir), last_day.isoformat()],
        spark_environment(data_dir),
    )
    identical = None
    if check_equality:
        print(f"[bench] {events:,} events: Spark full rebuild to {last_day}", flush=True)
        full = spark_run(data_dir, last_day, "full")
        identical = incremental_frame.equals(pd.read_parquet(settings.lake.sequences_dir(last_day)))
    else:
        full = previous  # the rebuild of the previous day: 29 of the 30 days, a slight under-estimate of the full cost
    print(f"[bench] {events:,} events: DuckDB SQL full rebuild to {last_day}", flush=True)
    env = {**os.environ, "RECO_DATA_DIR": str(data_dir)}
    duck = measured(
        [sys.executable, "-m", "bench.sessionize_bench", "--duckdb-only", str(data_dir), last_day.isoformat()], env
    )
    return {
        "events_read_full": full["read"],
        "events_read_incremental_day": incremental["read"],
        "users_in_incremental_day": day_users(settings.lake.raw_events_day_dir(last_day)),
        "users": full["users"],
        "spark_full_seconds": full["seconds"],
        "spark_full_events_per_s": round(full["read"] / full["seconds"]),
        "spark_incremental_seconds": incremental["seconds"],
        "spark_incremental_events_per_s": round(incremental["read"] / incremental["seconds"]),
        "spark_full_previous_day_seconds": previous["seconds"],
        # The state the incremental night wrote: rows in tonight's layer and in all layers, and the users.
        "incremental_state_layer_rows": layers["state_layers"][last_day.isoformat()],
        "incremental_state_rows_all_layers": sum(layers["state_layers"].values()),
        "spark_incremental_compacting_seconds": compacting["seconds"],
        "compacted_equals_incremental": compacted_same,
        "spark_floor_seconds": floor["seconds"],
        "ratio_floor_over_full": round(floor["seconds"] / full["seconds"], 3),
        "full_rebuild_reference": f"{full['days_read']} days",
        "duckdb_seconds": duck["seconds"],
        "duckdb_events_per_s": round(duck["read"] / duck["seconds"]),
        "ratio_incremental_over_full": round(incremental["seconds"] / full["seconds"], 3),
        "ratio_compacting_night_over_full": round(compacting["seconds"] / full["seconds"], 3),
        "ratio_spark_over_duckdb": round(full["seconds"] / duck["seconds"], 2),
        "peak_rss_mib": {
            "spark_full": full["peak_rss_mib"],
            "spark_incremental": incremental["peak_rss_mib"],
            "spark_incremental_compacting": compacting["peak_rss_mib"],
            "duckdb": duck["peak_rss_mib"],
        },
        # The driver: the Python process (what it collects) and the JVM (driver + executors in local mode).
        "driver_peak_rss_mib": {
            "spark_full_python": full["python_driver_peak_rss_mib"],
            "spark_full_jvm": full["jvm_peak_rss_mib"],
            "spark_incremental_python": incremental["python_driver_peak_rss_mib"],
            "spark_incremental_jvm": incremental["jvm_peak_rss_mib"],
        },
        "incremental_equals_full": identical,
        # Only a rebuild of the same 30 days can agree on the counts (above --check-equality-up-to: not compared).
        "duckdb_agrees": counts_agree(duck, full) if check_equality else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    parser.add_argument(
        "--day-events", type=int, default=30_000, help="raw lines of the last day, whatever the history size"
    )
    parser.add_argument(
        "--check-equality-up-to",
        type=int,
        default=2_000_000,
        help="also rebuild the last day in full and compare with the incremental run, for sizes up to this",
    )
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / "data" / "bench" / "sessionize")
    parser.add_argument("--duckdb-only", nargs=2, metavar=("DATA_DIR", "DS"), help=argparse.SUPPRESS)
    parser.add_argument("--floor-only", nargs=2, metavar=("DATA_DIR", "DS"), help=argparse.SUPPRESS)
    results.add_arguments(parser, "sessionize")
    args = parser.parse_args(argv)
    if args.floor_only:
        print(json.dumps(spark_floor(Path(args.floor_only[0]), dt.date.fromisoformat(args.floor_only[1]))))
        return
    if args.duckdb_only:
        data_dir, ds = Path(args.duckdb_only[0]), dt.date.fromisoformat(args.duckdb_only[1])
        print(json.dumps(duckdb_sessionize(data_dir, ds, data_dir / "duckdb-sequences.parquet")))
        return
    nights = {}
    for events in args.events:
        result = {"benchmark": "sessionize", "events": events, "days": DAYS}
        result.update(bench_size(events, args.root, events <= args.check_equality_up_to, args.day_events))
        print(json.dumps(result), flush=True)
        results.keep(result, args)
        nights[events] = result["spark_incremental_seconds"]
    if len(nights) > 1:
        smallest = min(nights)
        growth = {f"{events:,}": round(seconds / nights[smallest], 2) for events, seconds in nights.items()}
        print(
            json.dumps(
                {
                    "benchmark": "sessionize_incremental_by_history",
                    "day_lines": args.day_events,
                    "incremental_seconds": {f"{events:,}": seconds for events, seconds in nights.items()},
                    "over_smallest_history": growth,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
