"""The benchmarks' results files: one JSON line per run under bench/results/<bench>.jsonl, with when it ran, the code
version and the machine's cores; docs/results.md (`reco docs`) and docs/ACCURACY.md (`reco bench accuracy --render`)
are rendered from them, so measured figures live here and nowhere in prose."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
from pathlib import Path

from model_lib.config import PROJECT_ROOT

FOLDER = PROJECT_ROOT / "bench" / "results"


def record(result: dict, path: Path) -> None:
    """Appends the JSON line to `path`, with when it was recorded and the commit it ran at."""
    path.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    recorded_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    line = {"recorded_at": recorded_at, "commit": commit, "cores": os.cpu_count(), **result}
    with open(path, "a") as file:
        file.write(json.dumps(line) + "\n")


def read(path: Path) -> list[dict]:
    return [json.loads(text) for text in path.read_text().splitlines() if text.strip()] if path.exists() else []


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """--results / --no-record for a benchmark whose lines go to bench/results/<name>.jsonl."""
    parser.add_argument("--results", type=Path, default=FOLDER / f"{name}.jsonl", help="the file lines are appended to")
    parser.add_argument("--no-record", action="store_true", help="print the lines without appending them")


def keep(line: dict, args: argparse.Namespace) -> None:
    """Records a benchmark's line unless the run said --no-record."""
    if not args.no_record:
        record(line, args.results)


# What docs/results.md shows of each benchmark's newest line per data set: (label, dotted path into the line).
HEADLINES: dict[str, list[tuple[str, str]]] = {
    "accuracy": [
        ("model NDCG@10", "model.ndcg_10"),
        ("best baseline", "rule.best_baseline"),
        ("ratio to it", "rule.ratio"),
        ("wins", "rule.wins"),
        ("updates", "updates"),
        ("changed settings", "overrides"),
    ],
    "reasons": [("top share", "top_share"), ("above random", "above_random"), ("cost", "reason_cost")],
    "scoring": [
        ("job cold / ALS", "ratios.job_cold_vs_als"),
        ("job warm / ALS", "ratios.job_warm_vs_als"),
        ("job fresh / ALS cold", "ratios.job_fresh_vs_als_cold"),
        ("top-K / multiply", "ratios.top_k_vs_multiply"),
        ("extra tables", "ratios.extra_tables_job"),
    ],
    "sessionize": [
        ("full rebuild s", "spark_full_seconds"),
        ("incremental night s", "spark_incremental_seconds"),
        ("incremental / full", "ratio_incremental_over_full"),
        ("Spark / DuckDB", "ratio_spark_over_duckdb"),
        ("JVM peak MiB (full)", "driver_peak_rss_mib.spark_full_jvm"),
    ],
    "skew": [
        ("wall skewed / spread", "wall_ratio_skewed_over_spread"),
        ("JVM peak skewed / spread", "jvm_peak_ratio_skewed_over_spread"),
        ("bot named", "bot_named"),
    ],
    "training_speed": [("s per update", "seconds_per_update"), ("seq_len", "seq_len"), ("windows", "windows")],
}


def figure(line: dict, path: str):
    value = line
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def line_key(line: dict) -> str:
    """Which of a benchmark's runs a line is (its data set, history size or variant)."""
    for key in ("dataset", "events", "variant"):
        if line.get(key) is not None and not isinstance(line.get(key), dict):
            name = f"{line[key]:,} events" if isinstance(line[key], int) else str(line[key])
            changed = line.get("overrides")
            return f"{name} (changed: {', '.join(changed)})" if changed else name
    return "summary" if line.get("summary") else "run"
