"""One DAG run in a few lines: what each step counted and how long it took, for the task log and the UI.

The Spark steps (sessionize, recommend) record their counts in lake/run_stats/<step>/ds=D; the Python steps
return theirs to Airflow (XCom). `collect` puts both together for one run. The DAGs' last task shows it as the
run's summary (its return value is in the UI's XCom tab), and the failure callback prints the part done before
the failing step. Pure Python: no Airflow import, so it is tested on its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from model_lib.config import Settings
from model_lib.storage.lake import read_run_stats

SPARK_STEPS = ("sessionize", "recommend")
# The fields worth showing per step, in this order; a dotted name reaches into a nested result.
HEADLINE = {
    "sessionize": ("status", "mode", "read", "valid", "duplicates", "quarantined", "users", "seconds"),
    "resolve_champion": ("model_version",),
    "recommend": ("model_version", "k", "users", "rows", "known_share", "repeat_policy", "repeat_rows", "seconds"),
    "publish": ("model_version", "users", "rows", "coverage", "seconds"),
    "train": ("version", "test.hr_10", "test.ndcg_10", "test.coverage_20", "train_seconds", "resumed_after_epoch"),
    "promote": ("challenger", "champion_before", "promoted", "reason", "seconds"),
}


def headline(step: str, result) -> dict:
    """The HEADLINE fields of one step's result (an int result, such as a resolved version, is its first field)."""
    fields = HEADLINE.get(step, ())
    if not isinstance(result, dict):
        return {fields[0] if fields else "result": result}
    picked = {}
    for name in fields:
        value = result
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            value = value.item() if hasattr(value, "item") else value  # numpy scalars from Parquet
            picked[name] = round(value, 4) if isinstance(value, float) else value
    return picked


def collect(
    settings: Settings,
    ds: dt.date,
    steps: tuple[str, ...],
    returned: Callable[[str], object],
    since: dt.datetime | None = None,
) -> dict[str, dict]:
    """Headline per step that has a result for this run, in DAG order.

    `returned(step)` gives a Python step's return value (None when it has not run). A Spark step's row counts only
    when it finished at or after `since` (the run's start), so a previous run of the same ds is never reported.
    """
    collected = {}
    for step in steps:
        if step in SPARK_STEPS:
            result = read_run_stats(settings.lake.run_stats_dir(step, ds))
            if result and since and dt.datetime.fromisoformat(result["finished_at"]) < since:
                result = None
        else:
            result = returned(step)
        if result is not None:
            collected[step] = headline(step, result)
    return collected


def summary_lines(collected: dict[str, dict]) -> list[str]:
    return [
        f"{step}: " + ", ".join(f"{key}={value}" for key, value in fields.items()) for step, fields in collected.items()
    ]
