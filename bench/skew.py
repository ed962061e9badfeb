"""What one user can cost a night: a day whose events all belong to one user with a distinct item each (a bot, a
broken producer) against a day of the same size spread over many users, ten incremental nights each.

    reco bench skew [--events 1000000] [--nights 10] [--users 10000] [--variant skewed|spread|both]

Both variants start from the same full rebuild of a small base day (the synthetic clickstream), then run `--nights`
incremental sessionize nights (`python -m jobs.sessionize`, each in its own process, peak memory sampled as in
bench/sessionize_bench.py) on days of `--events` lines: in `skewed` one user, each event a new item id; in `spread`
`--users` users, each event a new item id. Settings: the shipped ones, except RECO_ITEM_COUNT_IDLE_DAYS=3 (a bot's
ids below the vocabulary floor are forgotten after 3 idle days instead of 90, so the bound shows within ten nights).

Prints, and appends to bench/results/skew.jsonl, one JSON line per night (wall seconds, peak JVM and process-tree
RSS, the state's users and item-count bytes and rows, the night's stats), then one summary line from the newest run
of each variant at the same --events in that file: skewed / spread for the median night's wall time and for the
peak JVM memory (target <= 1.5 each), and the state's size over the nights (bounded: the users state no larger than
the cap allows, item counts flat once the idle rule applies). `--variant` runs one of them alone (the other's
newest recorded run is the reference).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import shutil
import statistics
import sys
from pathlib import Path

from bench import results
from bench.sessionize_bench import measured, spark_environment
from model_lib.config import PROJECT_ROOT, get_settings
from model_lib.data.sources import SynthSpec, write_synth
from model_lib.storage.lake import parquet_rows

SETTINGS = {"RECO_ITEM_COUNT_IDLE_DAYS": "3"}
RESULTS = results.FOLDER / "skew.jsonl"


def write_day(folder: Path, day: dt.date, night: int, events: int, users: int) -> None:
    """`events` lines for dt=day, each a new item id; one user (`bot`) or `users` of them in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    step = 86_000 / events  # seconds between events, all inside the day
    with gzip.open(folder / "part-00000.jsonl.gz", "wt", compresslevel=1) as handle:
        for n in range(events):
            user = "bot" if users == 1 else f"u{n % users}"
            ts = (start + dt.timedelta(seconds=n * step)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            handle.write(f'{{"user_id":"{user}","item_id":"n{night}-i{n}","event_type":"view","ts":"{ts}"}}\n')


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def run_variant(name: str, users: int, events: int, nights: int, root: Path, path: Path) -> list[dict]:
    data_dir = root / name
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = get_settings(data_dir=data_dir)
    days = write_synth(SynthSpec(users=2_000, items=1_000, days=1), settings.lake.raw_events_dir)
    base = dt.date.fromisoformat(max(days))
    env = {**spark_environment(data_dir), **SETTINGS}
    command = [sys.executable, "-m", "jobs.sessionize", "--ds"]
    measured([*command, base.isoformat(), "--mode", "full"], env)
    rows = []
    for night in range(1, nights + 1):
        day = base + dt.timedelta(days=night)
        write_day(settings.lake.raw_events_day_dir(day), day, night, events, users)
        result = measured([*command, day.isoformat(), "--mode", "incremental"], env)
        state = settings.lake.state_dir(day)
        row = {
            "bench": "skew",
            "variant": name,
            "night": night,
            "events": events,
            "users_in_day": users,
            "wall_seconds": result["wall_seconds"],
            "jvm_peak_rss_mib": result["jvm_peak_rss_mib"],
            "peak_rss_mib": result["peak_rss_mib"],
            "state_users_bytes": folder_bytes(state / "users"),
            "state_item_counts_rows": parquet_rows(state / "item_counts"),
            "state_item_counts_bytes": folder_bytes(state / "item_counts"),
            "valid": result["valid"],
            "users_over_day_events": result.get("users_over_day_events", ""),
        }
        print(json.dumps(row), flush=True)
        results.record(row, path)
        rows.append(row)
    return rows


def newest_run(rows: list[dict], variant: str, events: int) -> list[dict]:
    """The nights of the newest run of a variant at `events` (a run starts at night 1)."""
    picked = [row for row in rows if row.get("variant") == variant and row.get("events") == events]
    starts = [i for i, row in enumerate(picked) if row["night"] == 1]
    return picked[starts[-1] :] if starts else []


def summary(skewed: list[dict], spread: list[dict]) -> dict:
    def median(rows, key):
        return statistics.median(row[key] for row in rows)

    return {
        "bench": "skew",
        "summary": True,
        "events_per_night": skewed[0]["events"],
        "nights": {"skewed": len(skewed), "spread": len(spread)},
        "wall_ratio_skewed_over_spread": round(median(skewed, "wall_seconds") / median(spread, "wall_seconds"), 2),
        "jvm_peak_ratio_skewed_over_spread": round(
            max(r["jvm_peak_rss_mib"] for r in skewed) / max(r["jvm_peak_rss_mib"] for r in spread), 2
        ),
        "skewed_state_users_bytes_per_night": [r["state_users_bytes"] for r in skewed],
        "skewed_item_counts_rows_per_night": [r["state_item_counts_rows"] for r in skewed],
        "spread_state_users_bytes_per_night": [r["state_users_bytes"] for r in spread],
        "bot_named": all("bot" in r["users_over_day_events"].split(",") for r in skewed),
        "targets": {"wall_ratio": 1.5, "jvm_peak_ratio": 1.5},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="reco bench skew", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="lines per night")
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--users", type=int, default=10_000, help="users of the spread variant's day")
    parser.add_argument("--variant", choices=("skewed", "spread", "both"), default="both")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / "data" / "bench" / "skew")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file the lines are appended to")
    args = parser.parse_args(argv)
    if args.variant in ("skewed", "both"):
        run_variant("skewed", 1, args.events, args.nights, args.root, args.results)
    if args.variant in ("spread", "both"):
        run_variant("spread", args.users, args.events, args.nights, args.root, args.results)
    recorded = results.read(args.results)
    skewed, spread = (newest_run(recorded, variant, args.events) for variant in ("skewed", "spread"))
    if not (skewed and spread):
        return {}
    result = summary(skewed, spread)
    print(json.dumps(result), flush=True)
    results.record(result, args.results)
    return result


if __name__ == "__main__":
    main()
