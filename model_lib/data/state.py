"""The sessionize state store: what a sessionized day folder holds, how a run decides whether it can continue
yesterday's state (its shape), and reading and writing a day as one committed unit.

A day, `lake/sessionized/ds=D/`: sequences/, vocab/, day_item_counts/, state/ (users, dedup_keys, item_counts) and
manifest.json, all written into one staging folder (the manifest last) and committed by one atomic swap, so a
reader or a crash sees the previous complete day or the new one, never a mix.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from model_lib.config import SessionizeSettings, Settings
from model_lib.contracts import REASON_CODES
from model_lib.data.events import SequenceRules, ValidationRules
from model_lib.storage.lake import commit_folder, latest_version_before, staging_path
from model_lib.storage.spark import side_by_side

MANIFEST = "manifest.json"  # the last file of a sessionized day; its presence says the day's state is complete


@dataclass(frozen=True)
class Plan:
    mode: str  # "full" or "incremental"
    why: str
    previous_state: Path | None = None
    previous_vocabulary: Path | None = None


def state_shape(sessionize: SessionizeSettings) -> dict:
    """The settings a stored state depends on; a state built with others cannot be continued. Carried-over users
    keep their encoded sequences, and the events a state holds were judged by the validation rules, so every rule
    that shapes either is here (derived from the rule groups, so a new rule cannot be forgotten)."""
    shape = {
        **asdict(SequenceRules.of(sessionize)),
        **asdict(ValidationRules.of(sessionize)),
        # A new validation rule comes with a new reason code; the events an older state accepted must be re-judged.
        "reason_codes": list(REASON_CODES),
    }
    return json.loads(json.dumps(shape))  # as the manifest stores it (tuples become lists)


def plan_run(settings: Settings, ds: dt.date, requested: str) -> Plan:
    yesterday = ds - dt.timedelta(days=1)
    manifest = settings.lake.sessionized_dir(yesterday) / MANIFEST
    if requested == "full":
        why = "full rebuild requested"
    elif not manifest.exists():
        why = f"no state for {yesterday}"
    else:
        state, vocabulary = settings.lake.state_dir(yesterday), settings.lake.vocab_dir(yesterday)
        built_with = json.loads(manifest.read_text())["shape"]
        changed = sorted(key for key, value in state_shape(settings.sessionize).items() if built_with.get(key) != value)
        if not changed:
            return Plan("incremental", f"continuing the state of {yesterday}", state, vocabulary)
        why = f"the state of {yesterday} was built with other {', '.join(changed)}"
    if requested == "incremental":
        raise RuntimeError(f"cannot sessionize {ds} incrementally: {why}; run with --mode full")
    earlier = latest_version_before(settings.lake.sessionized_root, ds)
    return Plan("full", why, None, earlier / "vocab" if earlier else None)


def read_previous_state(spark: SparkSession, plan: Plan) -> dict[str, DataFrame | pd.DataFrame] | None:
    if plan.previous_state is None:
        return None
    return {
        "users": spark.read.parquet(str(plan.previous_state / "users")),
        "dedup_keys": spark.read.parquet(str(plan.previous_state / "dedup_keys")),
        "item_counts": spark.read.parquet(str(plan.previous_state / "item_counts")),
    }


def write_day(
    frames: dict[str, DataFrame],
    settings: Settings,
    ds: dt.date,
    plan: Plan,
    users: int,
    alongside: list[Callable[[], object]] = (),
) -> None:
    """Writes sequences, vocabulary and state (`frames` by output name) into one staging folder, side by side with
    the `alongside` writes (which must finish first), the manifest last (with `users`, the rows of the sequences),
    then commits the day with one swap (lake.commit_folder)."""
    final = settings.lake.sessionized_dir(ds)
    staged = staging_path(final)
    places = {name: staged / name for name in ("sequences", "vocab", "day_item_counts")}
    places.update({name: staged / "state" / name for name in ("users", "dedup_keys", "item_counts")})
    writes = [functools.partial(frames[name].write.parquet, str(path)) for name, path in places.items()]
    side_by_side([*writes, *alongside])
    rows = {"users": users}
    manifest = {"ds": ds.isoformat(), "mode": plan.mode, "shape": state_shape(settings.sessionize), "rows": rows}
    (staged / MANIFEST).write_text(json.dumps(manifest, indent=2))
    commit_folder(staged, final)
