"""The sessionize state store: what a sessionized day folder holds, how a run decides whether it can continue
yesterday's state (its shape), and reading and writing a day as one committed unit.

A day, `lake/sessionized/ds=D/`: sequences/, vocab/, day_item_counts/, state/ (users, dedup_keys, item_counts) and
manifest.json, all written into one staging folder (the manifest last) and committed by one atomic swap, so a
reader or a crash sees the previous complete day or the new one, never a mix.

The users' state is layered, so that a night writes what the day changed rather than every user: `state/users/`
holds one `layer=X` folder per night since the last compaction, each with the rows of the users that night touched
(a full rebuild or a compaction writes every user into one layer). A day's folder hard-links the earlier layers'
files from yesterday's (no copy: a file is shared by the days that hold it, and deleting an old day frees nothing
a newer one still holds). A user's current row is the one in the newest layer that has it. When the layers hold
more rows than twice the users, the night compacts them into one (reading them then costs at most twice a compact
state). `sequences/` stays complete and flat for every reader: one row per user, whatever the layers.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from model_lib.config import SessionizeSettings, Settings
from model_lib.contracts import REASON_CODES, STATE_COLUMNS, STATE_LAYER_COLUMN
from model_lib.data.events import SequenceRules, newest_state_rows
from model_lib.data.raw_events import ValidationRules
from model_lib.storage.lake import (
    commit_folder,
    latest_version_before,
    link_files,
    parquet_rows,
    recover_path,
    staging_path,
)
from model_lib.storage.spark import side_by_side

MANIFEST = "manifest.json"  # the last file of a sessionized day; its presence says the day's state is complete
# A state stored otherwise is rebuilt: before layers every user was rewritten each night; before "user-scoped event
# ids" an event id was one key across all users (events.dedup_key); before "capped older items" a user kept every
# older item id; before "idle item counts pruned" the item counts had no last_day.
STATE_LAYOUT = "user layers, user-scoped event ids, capped older items, idle item counts pruned"


@dataclass(frozen=True)
class Plan:
    mode: str  # "full" or "incremental"
    why: str
    previous_state: Path | None = None
    previous_vocabulary: Path | None = None
    previous_sequences: Path | None = None
    # Yesterday's manifest: its rows (users, state_layers: layer ds -> user rows) and each table's Spark schema.
    previous_manifest: dict | None = None
    compact: bool = False  # fold the layers into one tonight, however many rows they hold

    @property
    def previous_layers(self) -> dict[str, int]:
        return self.previous_manifest["rows"]["state_layers"] if self.previous_manifest else {}

    def compacts(self, touched_users: int) -> bool:
        """Whether tonight folds the layers into one: when asked, or when they would hold more rows than twice the
        users."""
        if self.previous_manifest is None:
            return False
        layered = sum(self.previous_layers.values()) + touched_users
        return self.compact or layered > 2 * max(self.previous_manifest["rows"]["users"], touched_users)


def state_shape(sessionize: SessionizeSettings) -> dict:
    """The settings a stored state depends on; a state built with others cannot be continued. Carried-over users
    keep their encoded sequences, and the events a state holds were judged by the validation rules, so every rule
    that shapes either is here (derived from the rule groups, so a new rule cannot be forgotten)."""
    shape = {
        **asdict(SequenceRules.of(sessionize)),
        **asdict(ValidationRules.of(sessionize)),
        # A new validation rule comes with a new reason code; the events an older state accepted must be re-judged.
        "reason_codes": list(REASON_CODES),
        "state_layout": STATE_LAYOUT,
        # The item counts' forgetting rule (vocabulary.running_item_counts) depends on both.
        "min_item_count": sessionize.min_item_count,
        "item_count_idle_days": sessionize.item_count_idle_days,
    }
    return json.loads(json.dumps(shape))  # as the manifest stores it (tuples become lists)


def plan_run(settings: Settings, ds: dt.date, requested: str, compact: bool = False) -> Plan:
    yesterday = ds - dt.timedelta(days=1)
    recover_path(settings.lake.sessionized_dir(yesterday))  # a commit of yesterday that crashed half-way
    manifest = settings.lake.sessionized_dir(yesterday) / MANIFEST
    if requested == "full":
        why = "full rebuild requested"
    elif not manifest.exists():
        why = f"no state for {yesterday}"
    else:
        state, vocabulary = settings.lake.state_dir(yesterday), settings.lake.vocab_dir(yesterday)
        written = json.loads(manifest.read_text())
        built_with = written["shape"]
        changed = sorted(key for key, value in state_shape(settings.sessionize).items() if built_with.get(key) != value)
        if not changed:
            return Plan(
                "incremental",
                f"continuing the state of {yesterday}",
                state,
                vocabulary,
                settings.lake.sequences_dir(yesterday),
                written,
                compact,
            )
        why = f"the state of {yesterday} was built with other {', '.join(changed)}"
    if requested == "incremental":
        raise RuntimeError(f"cannot sessionize {ds} incrementally: {why}; run with --mode full")
    earlier = latest_version_before(settings.lake.sessionized_root, ds)
    return Plan("full", why, None, earlier / "vocab" if earlier else None)


@dataclass(frozen=True)
class StoredState:
    """Yesterday's sessionized day as tonight's incremental run continues it (Spark frames): the users' state rows
    (every layer, with its STATE_LAYER_COLUMN), the de-duplication keys a later day can still repeat, the running
    item counts, and the sequences (carried over for the users tonight does not touch)."""

    users: DataFrame
    dedup_keys: DataFrame
    item_counts: DataFrame
    sequences: DataFrame


def read_previous_state(spark: SparkSession, plan: Plan) -> StoredState | None:
    """Yesterday's state tables and sequences, read with the schemas the manifest recorded: inferring a Parquet
    schema is a Spark job of its own, seconds of a small night's fixed cost."""
    if plan.previous_state is None:
        return None
    folders = {
        "users": plan.previous_state / "users",
        "dedup_keys": plan.previous_state / "dedup_keys",
        "item_counts": plan.previous_state / "item_counts",
        "sequences": plan.previous_sequences,
    }
    schemas = {name: T.StructType.fromJson(schema) for name, schema in plan.previous_manifest["schemas"].items()}
    frames = {name: spark.read.schema(schemas[name]).parquet(str(folder)) for name, folder in folders.items()}
    return StoredState(**frames)


def compacted(previous_users: DataFrame, touched: DataFrame) -> DataFrame:
    """One layer for every user: the touched users' new rows and every other user's newest row."""
    untouched = newest_state_rows(previous_users.join(touched.select("user_id"), "user_id", "left_anti"))
    return untouched.unionByName(touched.select(STATE_COLUMNS))


def write_day(
    frames: dict[str, DataFrame],
    settings: Settings,
    ds: dt.date,
    plan: Plan,
    compacting: bool,
    alongside: list[Callable[[], object]] = (),
) -> dict:
    """Writes sequences, vocabulary and state (`frames` by output name; `users` is tonight's state layer) into one
    staging folder, side by side with the `alongside` writes (which must finish first); links yesterday's layers
    beside tonight's unless `compacting` (tonight's layer then holds every user); writes the manifest last and
    commits the day with one swap (lake.commit_folder). Returns the manifest's row counts."""
    final = settings.lake.sessionized_dir(ds)
    staged = staging_path(final)
    users = staged / "state" / "users"
    places = {name: staged / name for name in ("sequences", "vocab", "day_item_counts")}
    places.update({name: staged / "state" / name for name in ("dedup_keys", "item_counts")})
    places["users"] = users / f"{STATE_LAYER_COLUMN}={ds.isoformat()}"
    writes = [functools.partial(frames[name].write.parquet, str(path)) for name, path in places.items()]
    side_by_side([*writes, *alongside])
    layers = {} if compacting else dict(plan.previous_layers)
    for layer in layers:
        folder = f"{STATE_LAYER_COLUMN}={layer}"
        link_files(plan.previous_state / "users" / folder, users / folder)
    layers[ds.isoformat()] = parquet_rows(places["users"])
    rows = {"users": parquet_rows(places["sequences"]), "state_layers": dict(sorted(layers.items()))}
    schemas = {name: frames[name].schema for name in ("sequences", "dedup_keys", "item_counts")}
    # As the layers read back: with the partition column (a new StructType: a frame's own schema is cached by PySpark).
    layered = [*frames["users"].schema.fields, T.StructField(STATE_LAYER_COLUMN, T.DateType())]
    schemas["users"] = T.StructType(layered)
    manifest = {
        "ds": ds.isoformat(),
        "mode": plan.mode,
        "shape": state_shape(settings.sessionize),
        "rows": rows,
        "schemas": {name: schema.jsonValue() for name, schema in schemas.items()},
    }
    (staged / MANIFEST).write_text(json.dumps(manifest, indent=2))
    commit_folder(staged, final)
    return rows
