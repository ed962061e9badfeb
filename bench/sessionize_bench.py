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
from bench.sessionize_duckdb import duckdb_sessionize
from model_lib.config import PROJECT_ROOT, get_settings
from model_lib.data.sources import SynthSpec, write_synth
from model_lib.runtime import engine_environment

DAYS = 30
SESSION_ID = re.compile(r'"session_id":"([^"]*)"')


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


def synthesised_history(events: int, root: Path, day_events: int) -> tuple[Path, object, dt.date]:
    """A history of `events` synthetic events over DAYS days whose last day is cut to `day_events` lines, made once
    per size -> (its data folder, its settings, the last day)."""
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
    return data_dir, settings, last_day


def incremental_nights(data_dir: Path, settings, last_day: dt.date, events: int):
    """The last day as an incremental night, then again compacting the state -> (the night, its state layers' rows,
    the compacting night, the night's sequences, whether compacting kept them)."""
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
    return incremental, layers, compacting, incremental_frame, compacted_same


def peaks(full: dict, incremental: dict, compacting: dict, duck: dict) -> dict:
    """Peak memory of each run's process tree, and of the Spark runs' Python driver (what it collects) and JVM (driver
    and executors in local mode)."""
    return {
        "peak_rss_mib": {
            "spark_full": full["peak_rss_mib"],
            "spark_incremental": incremental["peak_rss_mib"],
            "spark_incremental_compacting": compacting["peak_rss_mib"],
            "duckdb": duck["peak_rss_mib"],
        },
        "driver_peak_rss_mib": {
            "spark_full_python": full["python_driver_peak_rss_mib"],
            "spark_full_jvm": full["jvm_peak_rss_mib"],
            "spark_incremental_python": incremental["python_driver_peak_rss_mib"],
            "spark_incremental_jvm": incremental["jvm_peak_rss_mib"],
        },
    }


def bench_size(events: int, root: Path, check_equality: bool, day_events: int) -> dict:
    data_dir, settings, last_day = synthesised_history(events, root, day_events)
    print(f"[bench] {events:,} events: Spark full rebuild to {last_day - dt.timedelta(days=1)} (makes the state)")
    previous = spark_run(data_dir, last_day - dt.timedelta(days=1), "full")
    incremental, layers, compacting, incremental_frame, compacted_same = incremental_nights(
        data_dir, settings, last_day, events
    )
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
        **peaks(full, incremental, compacting, duck),
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
