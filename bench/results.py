"""The benchmarks' results files: one JSON line per run under bench/results/, with the code version that produced
it; the docs render from them (bench/accuracy.py --render)."""

from __future__ import annotations

import datetime as dt
import json
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
    line = {"recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "commit": commit, **result}
    with open(path, "a") as file:
        file.write(json.dumps(line) + "\n")


def read(path: Path) -> list[dict]:
    return [json.loads(text) for text in path.read_text().splitlines() if text.strip()] if path.exists() else []
