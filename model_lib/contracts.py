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
