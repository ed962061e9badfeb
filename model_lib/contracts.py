"""Contract constants shared by Spark, TensorFlow and the warehouse code (kept free of heavy imports)."""

# Item indices: 0 pads sequences on the left, 1 stands for any item outside the vocabulary, real items start at 2.
PAD_INDEX = 0
UNKNOWN_ITEM_INDEX = 1
FIRST_ITEM_INDEX = 2

# Quarantine reason codes, checked in this order; the first that applies is recorded.
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


# One recommendation row (lake/recommendations and the warehouse table `recommendations`): name, Spark type, SQL
# type, nullable. The Spark schema of the scoring output, the table's DDL and every column list derive from it.
RECOMMENDATION_FIELDS = (
    ("ds", "string", "DATE", False),
    ("user_id", "string", "VARCHAR", False),
    ("rank", "int", "INTEGER", False),
    ("item_id", "string", "VARCHAR", False),
    ("score", "double", "DOUBLE PRECISION", False),
    ("source", "string", "VARCHAR", False),
    ("reason_item_id", "string", "VARCHAR", True),
    ("model_name", "string", "VARCHAR", False),
    ("model_version", "int", "INTEGER", False),
)
RECOMMENDATION_COLUMNS = [name for name, *_ in RECOMMENDATION_FIELDS]
RECOMMENDATION_SPARK_SCHEMA = ", ".join(f"{name} {spark_type}" for name, spark_type, *_ in RECOMMENDATION_FIELDS)
RECOMMENDATION_KEY = ("ds", "user_id", "rank")

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
# The state's user rows keep the sequence columns too, so a user the next day does not touch is carried as is.
STATE_COLUMNS = [*SEQUENCE_COLUMNS, "events", "older_item_ids"]
