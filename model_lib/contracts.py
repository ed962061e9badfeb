"""Contract constants shared by Spark, TensorFlow and the warehouse code (kept free of heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

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


class Column(NamedTuple):
    """One column of a warehouse table: its Spark type (the job's output), its SQL type (the DDL), whether it may be
    NULL, and what it means to the analyst who reads it (docs/warehouse.md is generated from these)."""

    name: str
    spark_type: str
    sql_type: str
    nullable: bool
    description: str


@dataclass(frozen=True)
class Table:
    """A warehouse table: the nightly ones are written to the lake (lake/nightly/ds=D/<name>) and published whole per
    day; the two run tables are written by the publish itself.

    `fields` in column order: the Spark schema of the job's output, the table's DDL, every column list and the
    analysts' page derive from it, so a column is added in one place. `grain` says what one row is; `caveats` what
    an analyst must know before counting or joining."""

    name: str
    fields: tuple[Column, ...]
    key: tuple[str, ...]
    description: str
    grain: str
    caveats: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [column.name for column in self.fields]

    @property
    def spark_schema(self) -> str:
        return ", ".join(f"{column.name} {column.spark_type}" for column in self.fields)

    @property
    def array_columns(self) -> list[str]:
        return [column.name for column in self.fields if column.sql_type.endswith("[]")]


# Every nightly table starts with the day and ends with the champion that produced it.
DAY = Column("ds", "string", "DATE", False, "the night the row belongs to: the day of raw events it has seen last")
USER = Column("user_id", "string", "VARCHAR", False, "the user, as the raw events name them")
MODEL = (
    Column("model_name", "string", "VARCHAR", False, "the registered model that produced the row"),
    Column("model_version", "int", "INTEGER", False, "its version: one per day across every nightly table"),
)
ONE_CHAMPION_A_DAY = (
    "Every nightly table of a day comes from the same model version; a new champion can change every row the next day."
)

RECOMMENDATIONS = Table(
    "recommendations",
    (
        DAY,
        USER,
        Column("rank", "int", "INTEGER", False, "1 = the best; at most RECO_TOP_K (the `k` trigger param) per user"),
        Column("item_id", "string", "VARCHAR", False, "the recommended item"),
        Column("score", "double", "DOUBLE PRECISION", False, "the model's log-probability of the item (higher first)"),
        Column(
            "source",
            "string",
            "VARCHAR",
            False,
            "'model'; 'repeat' for an item the user already has an event on (allow_repeats); "
            "'popular' for users whose history holds only items the model does not know",
        ),
        Column(
            "reason_item_id",
            "string",
            "VARCHAR",
            True,
            "the history item that explains this item under the model (docs/models.md, Reasons); NULL when popular",
        ),
        *MODEL,
    ),
    ("ds", "user_id", "rank"),
    "The top-K items for every user with history, each with the item that explains it.",
    "one row per (ds, user_id, rank)",
    (
        "A day is a full snapshot: every user with history, not only the day's active users.",
        "Under exclude_seen no item the user has an event on is ever listed (docs/models.md, Repeat policy).",
        "Scores compare within one user's list and one model version, not across users or versions.",
        ONE_CHAMPION_A_DAY,
    ),
)

# The network's input (model/network.py): three aligned (B, T) integer arrays of a window of events, oldest first,
# left-padded with 0. Built by model_inputs only, so the keys are written once.
MODEL_INPUTS = ("items", "event_types", "gaps")


def model_inputs(items, event_types, gaps) -> dict:
    """The dict every forward pass takes: item indices, event-type indices (1-based), gap buckets."""
    return dict(zip(MODEL_INPUTS, (items, event_types, gaps), strict=True))


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
USER_NEXT_BEHAVIOUR = Table(
    "user_next_behaviour",
    (
        DAY,
        USER,
        Column("event_type", "string", "VARCHAR", False, "each configured event type"),
        Column("probability", "double", "DOUBLE PRECISION", False, "the chance that the user's next event is of it"),
        *MODEL,
    ),
    ("ds", "user_id", "event_type"),
    "The chance that each user's next event is of each type (the model's event-type head).",
    "one row per (ds, user_id, event_type); a user's probabilities sum to 1",
    ("Empty for a day whose champion has no event-type head (data with a single event type, e.g. MovieLens).",),
)
USER_PROFILES = Table(
    "user_profiles",
    (
        DAY,
        USER,
        Column("segment", "int", "INTEGER", False, "the user's segment that day (nearest centroid of user_segments)"),
        Column(
            "embedding",
            "array<double>",
            "DOUBLE PRECISION[]",
            False,
            "the model's vector of the user after their last event",
        ),
        *MODEL,
    ),
    ("ds", "user_id"),
    "Each user's vector under the model and the segment it falls in.",
    "one row per (ds, user_id)",
    (
        "Segments belong to a model version: segment 3 means the same taste every night while one champion serves.",
        "Vectors of different model versions are not comparable.",
    ),
)
USER_SEGMENTS = Table(
    "user_segments",
    (
        DAY,
        Column("segment", "int", "INTEGER", False, "the segment (KMeans cluster of the training users' vectors)"),
        Column("users", "long", "BIGINT", False, "users in it that day"),
        Column(
            "top_item_ids",
            "array<string>",
            "VARCHAR[]",
            False,
            "its most characteristic items (highest lift), best first",
        ),
        Column("description", "string", "VARCHAR", False, "their titles where item metadata exists, else their ids"),
        Column("x", "double", "DOUBLE PRECISION", False, "the segment's mean in the 2-D picture (PCA), first axis"),
        Column("y", "double", "DOUBLE PRECISION", False, "second axis"),
        *MODEL,
    ),
    ("ds", "segment"),
    "The day's user segments: size, characteristic items, a readable description, place in the picture.",
    "one row per (ds, segment)",
    ("A new champion brings new segments; compare segments across days only under one model_version.",),
)
USER_ANOMALIES = Table(
    "user_anomalies",
    (
        DAY,
        USER,
        Column(
            "score",
            "double",
            "DOUBLE PRECISION",
            False,
            "mean -ln P(event | the events before it) over the day's events",
        ),
        Column(
            "percentile", "double", "DOUBLE PRECISION", False, "its rank among the users with events that day (0..1)"
        ),
        Column("events", "int", "INTEGER", False, "the day's events that were scored"),
        Column(
            "outside_top_share",
            "double",
            "DOUBLE PRECISION",
            False,
            "share of them outside the model's top RECO_ANOMALY_TOP_G",
        ),
        Column("most_surprising_item_id", "string", "VARCHAR", False, "the item of the least expected event"),
        *MODEL,
    ),
    ("ds", "user_id"),
    "The day's most surprising users under the model (a hijacked account, a burst of random items).",
    "one row per (ds, user_id), only users at or above RECO_ANOMALY_PERCENTILE of the day's scores",
    ("Only users with events on ds (event time in [ds, ds + 1) UTC) are scored.",),
)
# What one nightly run publishes, in one transaction per day (storage/warehouse/base.py).
NIGHTLY_TABLES = (RECOMMENDATIONS, USER_NEXT_BEHAVIOUR, USER_PROFILES, USER_SEGMENTS, USER_ANOMALIES)

# Written by the publish itself, one row per attempt and per table (storage/warehouse/base.py).
PUBLISHED_DAY = Column("ds", "string", "DATE", False, "the day published")
RECOMMENDATION_RUNS = Table(
    "recommendation_runs",
    (
        PUBLISHED_DAY,
        Column("run_id", "string", "VARCHAR", False, "the publish attempt"),
        Column("model_version", "int", "INTEGER", True, "the version the day came from"),
        Column("users", "long", "BIGINT", False, "users with recommendations"),
        Column("rows", "long", "BIGINT", False, "rows of recommendations"),
        Column(
            "coverage",
            "double",
            "DOUBLE PRECISION",
            False,
            "distinct recommended items / the items the champion could recommend (its vocabulary): the denominator of "
            "MLflow's coverage metrics too",
        ),
        Column("started_at", "timestamp", "TIMESTAMP", False, "UTC"),
        Column("finished_at", "timestamp", "TIMESTAMP", False, "UTC"),
        Column("status", "string", "VARCHAR", False, "'success' or 'failed' (a failed publish left the old day)"),
    ),
    (),
    "Every publish attempt of a day, successful or not.",
    "one row per publish attempt",
    ("A day re-published has several rows: the latest finished_at is the one the tables hold.",),
)
PUBLISHED_TABLES = Table(
    "published_tables",
    (
        PUBLISHED_DAY,
        Column("run_id", "string", "VARCHAR", False, "the successful publish (recommendation_runs.run_id)"),
        Column("table_name", "string", "VARCHAR", False, "a nightly table"),
        Column("rows", "long", "BIGINT", False, "the rows it received"),
        Column("model_version", "int", "INTEGER", True, "the version they came from"),
    ),
    (),
    "What each nightly table received from a successful publish.",
    "one row per (successful publish, nightly table)",
)
WAREHOUSE_TABLES = (*NIGHTLY_TABLES, RECOMMENDATION_RUNS, PUBLISHED_TABLES)
