"""Contract constants shared by Spark, TensorFlow and the warehouse code (kept free of heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

# Item indices: 0 pads sequences on the left, 1 stands for any item outside the vocabulary, real items start at 2.
PAD_INDEX = 0
UNKNOWN_ITEM_INDEX = 1
FIRST_ITEM_INDEX = 2

# Quarantine reason codes, checked in this order; the first that applies is recorded.
REASON_UNREADABLE_FILE = "unreadable_file"  # a whole raw file cannot be read to its end (a truncated .gz): one row
REASON_TOO_LONG = "too_long"  # the line, or an id in it, is longer than configured
REASON_BAD_ENCODING = "bad_encoding"  # the line is not valid UTF-8 (no reader but Spark could read it back)
REASON_NOT_JSON = "not_json"
REASON_MISSING_FIELD = "missing_field"
REASON_BAD_ID = "bad_id"  # an id holds a control character (PostgreSQL text cannot hold NUL; tabs break exports)
REASON_BAD_TS = "bad_ts"
REASON_UNKNOWN_EVENT_TYPE = "unknown_event_type"
REASON_FUTURE_TS = "future_ts"  # ts more than the tolerance after the end of its dt folder
REASON_TOO_LATE = "too_late"  # arrived in a dt folder more than the allowed lateness after its ts
REASON_CODES = (
    REASON_UNREADABLE_FILE,
    REASON_TOO_LONG,
    REASON_BAD_ENCODING,
    REASON_NOT_JSON,
    REASON_MISSING_FIELD,
    REASON_BAD_ID,
    REASON_BAD_TS,
    REASON_UNKNOWN_EVENT_TYPE,
    REASON_FUTURE_TS,
    REASON_TOO_LATE,
)


@dataclass(frozen=True)
class Table:
    """A table the nightly run writes to the lake (lake/<name>/ds=D) and publishes to the warehouse.

    `fields`: (name, Spark type, SQL type, nullable) in column order. The Spark schema of the job's output, the
    table's DDL and every column list derive from it, so a column is added in one place."""

    name: str
    fields: tuple[tuple[str, str, str, bool], ...]
    key: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return [name for name, *_ in self.fields]

    @property
    def spark_schema(self) -> str:
        return ", ".join(f"{name} {spark_type}" for name, spark_type, *_ in self.fields)

    @property
    def array_columns(self) -> list[str]:
        return [name for name, _, sql_type, _ in self.fields if sql_type.endswith("[]")]


# Every nightly table starts with the day and ends with the champion that produced it.
DAY = ("ds", "string", "DATE", False)
USER = ("user_id", "string", "VARCHAR", False)
MODEL = (("model_name", "string", "VARCHAR", False), ("model_version", "int", "INTEGER", False))

RECOMMENDATIONS = Table(
    "recommendations",
    (
        DAY,
        USER,
        ("rank", "int", "INTEGER", False),
        ("item_id", "string", "VARCHAR", False),
        ("score", "double", "DOUBLE PRECISION", False),
        ("source", "string", "VARCHAR", False),
        ("reason_item_id", "string", "VARCHAR", True),
        *MODEL,
    ),
    ("ds", "user_id", "rank"),
)

# The JSON fields of the raw-event contract, all read as strings so that a wrong type is a reason, not a crash.
RAW_FIELDS = ["user_id", "item_id", "event_type", "ts", "event_id", "value", "session_id"]
REQUIRED_FIELDS = ["user_id", "item_id", "event_type", "ts"]
ID_FIELDS = ["user_id", "item_id", "event_id", "session_id"]

# What a user's history keeps of each event (the per-user state stores exactly these).
EVENT_FIELDS = ["event_ts", "arrival", "item_id", "event_type", "session_id"]
SEQUENCE_COLUMNS = [
    "user_id",
    "item_indices",
    "event_type_indices",
    "gap_buckets",
    "session_indices",
    "event_times",
    "length",
    "older_item_indices",
    "last_event_ts",
]
# What the state keeps per user to continue the next night (the last L+1 events, the items of older ones); a user the
# night does not touch keeps yesterday's sequence row, so the sequence columns need not be stored twice.
STATE_COLUMNS = ["user_id", "events", "older_items", "older_items_dropped"]
# The state's user rows are stored in layers, one per night (model_lib/data/state.py): the partition column naming
# the night that wrote a row; a user's newest row is the current one.
STATE_LAYER_COLUMN = "layer"
# The chance that each user's next event is of each type (the model's event-type head), one row per type.
USER_NEXT_BEHAVIOUR = Table(
    "user_next_behaviour",
    (
        DAY,
        USER,
        ("event_type", "string", "VARCHAR", False),
        ("probability", "double", "DOUBLE PRECISION", False),
        *MODEL,
    ),
    ("ds", "user_id", "event_type"),
)
# Each user's vector (the model's state after their last event), the segment it falls in (serving/profiles.py).
USER_PROFILES = Table(
    "user_profiles",
    (
        DAY,
        USER,
        ("segment", "int", "INTEGER", False),
        ("embedding", "array<double>", "DOUBLE PRECISION[]", False),
        *MODEL,
    ),
    ("ds", "user_id"),
)
# One row per segment: its size, its most characteristic items, a readable description, its place in the 2-D picture.
USER_SEGMENTS = Table(
    "user_segments",
    (
        DAY,
        ("segment", "int", "INTEGER", False),
        ("users", "long", "BIGINT", False),
        ("top_item_ids", "array<string>", "VARCHAR[]", False),
        ("description", "string", "VARCHAR", False),
        ("x", "double", "DOUBLE PRECISION", False),
        ("y", "double", "DOUBLE PRECISION", False),
        *MODEL,
    ),
    ("ds", "segment"),
)
# The day's most surprising users under the model (serving/anomalies.py): those at or above the configured percentile.
USER_ANOMALIES = Table(
    "user_anomalies",
    (
        DAY,
        USER,
        ("score", "double", "DOUBLE PRECISION", False),
        ("percentile", "double", "DOUBLE PRECISION", False),
        ("events", "int", "INTEGER", False),
        ("outside_top_share", "double", "DOUBLE PRECISION", False),
        ("most_surprising_item_id", "string", "VARCHAR", False),
        *MODEL,
    ),
    ("ds", "user_id"),
)
# What one nightly run publishes, in one transaction per day (storage/warehouse/base.py).
NIGHTLY_TABLES = (RECOMMENDATIONS, USER_NEXT_BEHAVIOUR, USER_PROFILES, USER_SEGMENTS, USER_ANOMALIES)
