"""Raw events -> validated events -> sessions -> per-user padded sequences (pure Spark transforms).

Every function here takes and returns DataFrames and uses native Spark functions only (no Python UDFs), so the
job in jobs/sessionize.py is extract -> these transforms -> load, and each transform is unit-tested on tiny
DataFrames. Spark 4 runs with ANSI mode on, so every parse that may fail uses a try_* function.

Counts reconcile by construction: every raw line ends up in exactly one of
`valid` (after de-duplication), `duplicate` or `quarantined`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from model_lib.schemas import (
    FIRST_ITEM_INDEX,
    PAD_INDEX,
    REASON_BAD_TS,
    REASON_MISSING_FIELD,
    REASON_NOT_JSON,
    REASON_UNKNOWN_EVENT_TYPE,
    UNKNOWN_ITEM_INDEX,
)

# The JSON fields of the raw-event contract, all read as strings so that a wrong type is a reason, not a crash.
RAW_FIELDS = ["user_id", "item_id", "event_type", "ts", "event_id", "value", "session_id"]
REQUIRED_FIELDS = ["user_id", "item_id", "event_type", "ts"]
RAW_JSON_SCHEMA = T.StructType([T.StructField(name, T.StringType()) for name in RAW_FIELDS])


def parse_raw_lines(lines: DataFrame) -> DataFrame:
    """Raw text lines -> one row per line with the contract's fields as strings.

    Input columns: `line` (string), `dt` (partition date), `line_order` (long, increasing in input order).
    Adds `is_json` (false when the line is not a JSON object).
    """
    parsed = F.from_json(F.col("line"), RAW_JSON_SCHEMA, {"mode": "PERMISSIVE"})
    # from_json may return a partly filled struct for broken JSON, so JSON-ness is checked on its own:
    # a broken line is `not_json`, not `missing_field`.
    looks_like_object = F.trim(F.col("line")).startswith("{")
    with_fields = lines.withColumn("_parsed", parsed)
    return with_fields.select(
        "line",
        "dt",
        "line_order",
        (looks_like_object & F.col("_parsed").isNotNull() & F.try_parse_json(F.col("line")).isNotNull()).alias(
            "is_json"
        ),
        *[F.nullif(F.trim(F.col(f"_parsed.{name}")), F.lit("")).alias(name) for name in RAW_FIELDS],
    )


def parse_timestamp(ts: Column) -> Column:
    """ISO-8601 with offset, or integer epoch milliseconds -> TIMESTAMP (null when unparseable)."""
    is_epoch_ms = ts.rlike(r"^-?\d{1,16}$")
    epoch_ms = F.timestamp_millis(ts.try_cast("long"))
    return F.when(is_epoch_ms, epoch_ms).otherwise(F.try_to_timestamp(ts))


def validate(parsed: DataFrame, event_types: list[str]) -> DataFrame:
    """Adds `event_ts` (timestamp) and `reason` (null for a valid row, else the first broken rule)."""
    ts = parse_timestamp(F.col("ts"))
    missing = F.lit(False)
    for name in REQUIRED_FIELDS:
        missing = missing | F.col(name).isNull()
    reason = (
        F.when(~F.col("is_json"), F.lit(REASON_NOT_JSON))
        .when(missing, F.lit(REASON_MISSING_FIELD))
        .when(ts.isNull(), F.lit(REASON_BAD_TS))
        .when(~F.col("event_type").isin(event_types), F.lit(REASON_UNKNOWN_EVENT_TYPE))
    )
    return parsed.withColumn("event_ts", ts).withColumn("reason", reason)


def quarantine_rows(validated: DataFrame) -> DataFrame:
    """The rows that broke a rule, with the raw text kept so nothing is lost."""
    return validated.where(F.col("reason").isNotNull()).select("dt", "reason", F.col("line").alias("raw_line"))


def deduplicate(valid: DataFrame) -> DataFrame:
    """One row per event: by event_id when present, otherwise by (user_id, item_id, event_type, ts).

    The first occurrence in input order is kept, so a re-delivered event never moves in the sequence.
    """
    dedup_key = F.coalesce(
        F.concat(F.lit("id:"), F.col("event_id")),
        F.concat_ws("\u0001", F.lit("t"), "user_id", "item_id", "event_type", F.col("event_ts").cast("string")),
    )
    first = Window.partitionBy("_dedup_key").orderBy("line_order")
    return (
        valid.withColumn("_dedup_key", dedup_key)
        .withColumn("_occurrence", F.row_number().over(first))
        .where(F.col("_occurrence") == 1)
        .drop("_dedup_key", "_occurrence")
    )


def build_vocabulary(events: DataFrame, min_count: int) -> DataFrame:
    """Items ranked by frequency (ties by item_id) -> `item_index` from 2; 0 = padding, 1 = unknown item.

    Items seen fewer than `min_count` times stay out and map to the unknown index.
    """
    counts = events.groupBy("item_id").agg(F.count("*").alias("count")).where(F.col("count") >= min_count)
    rank = Window.orderBy(F.col("count").desc(), F.col("item_id"))
    return counts.withColumn("item_index", (F.row_number().over(rank) + (FIRST_ITEM_INDEX - 1)).cast("int"))


def gap_bucket(gap_seconds: Column, max_bucket: int) -> Column:
    """1 for a user's first event, else 2 + floor(log2(1 + gap seconds)), capped at max_bucket (0 = padding)."""
    log_bucket = F.floor(F.log2(F.greatest(gap_seconds, F.lit(0)) + 1)).cast("int") + 2
    return F.when(gap_seconds.isNull(), F.lit(1)).otherwise(F.least(log_bucket, F.lit(max_bucket)))


def sessionize(events: DataFrame, gap_minutes: int, max_gap_bucket: int) -> DataFrame:
    """Orders each user's events by time (ties in input order) and marks sessions and gaps.

    Adds `gap_seconds`, `gap_bucket`, `session_index` (0-based, a new session after `gap_minutes` of inactivity
    or when the client's session_id changes) and `position_in_session` (0-based).
    """
    by_user = Window.partitionBy("user_id").orderBy("event_ts", "line_order")
    previous_ts = F.lag("event_ts").over(by_user)
    previous_session = F.lag("session_id").over(by_user)
    gap_seconds = F.col("event_ts").cast("double") - previous_ts.cast("double")
    starts_session = (
        previous_ts.isNull()
        | (F.col("gap_seconds") > gap_minutes * 60)
        | (~F.col("session_id").eqNullSafe(previous_session))
    ).cast("int")
    with_gaps = events.withColumn("gap_seconds", gap_seconds)
    with_starts = with_gaps.withColumn("_starts", starts_session)
    in_session = Window.partitionBy("user_id", "session_index").orderBy("event_ts", "line_order")
    return (
        with_starts.withColumn("session_index", F.sum("_starts").over(by_user) - 1)
        .withColumn("position_in_session", F.row_number().over(in_session) - 1)
        .withColumn("gap_bucket", gap_bucket(F.col("gap_seconds"), max_gap_bucket))
        .drop("_starts")
    )


def index_events(events: DataFrame, vocabulary: DataFrame, event_types: list[str]) -> DataFrame:
    """Adds `item_index` (1 for items outside the vocabulary) and `event_type_index` (1-based, 0 = padding)."""
    type_index = F.array_position(F.array(*[F.lit(t) for t in event_types]), F.col("event_type")).cast("int")
    return (
        events.join(F.broadcast(vocabulary.select("item_id", "item_index")), "item_id", "left")
        .withColumn("item_index", F.coalesce(F.col("item_index"), F.lit(UNKNOWN_ITEM_INDEX)))
        .withColumn("event_type_index", type_index)
    )


def last_events_as_sequences(indexed: DataFrame, seq_len: int) -> DataFrame:
    """Per user the last `seq_len` events as left-padded arrays (one shuffle by user).

    Output: user_id, item_indices, event_type_indices, gap_buckets (array<int> of length seq_len, oldest first,
    0 = padding on the left), length (true number of events kept, <= seq_len), older_item_indices (distinct items of the
    events before the window, so they can still be excluded from recommendations), last_event_ts.
    """
    newest_first = Window.partitionBy("user_id").orderBy(F.col("event_ts").desc(), F.col("line_order").desc())
    ranked = indexed.withColumn("_recency", F.row_number().over(newest_first))
    in_window = F.col("_recency") <= seq_len
    grouped = ranked.groupBy("user_id").agg(
        F.sort_array(
            F.collect_list(
                F.when(
                    in_window,
                    F.struct(
                        (-F.col("_recency")).alias("order"),
                        F.col("item_index").alias("item"),
                        F.col("event_type_index").alias("event_type"),
                        F.col("gap_bucket").alias("gap"),
                    ),
                )
            )
        ).alias("_events"),
        F.array_sort(F.collect_set(F.when(~in_window, F.col("item_index")))).alias("older_item_indices"),
        F.max("event_ts").alias("last_event_ts"),
    )

    def left_padded(field: str) -> Column:
        values = F.transform(F.col("_events"), lambda event: event[field].cast("int"))
        padding = F.array_repeat(F.lit(PAD_INDEX), F.lit(seq_len) - F.size(values))
        return F.concat(padding, values)

    return grouped.select(
        "user_id",
        left_padded("item").alias("item_indices"),
        left_padded("event_type").alias("event_type_indices"),
        left_padded("gap").alias("gap_buckets"),
        F.size("_events").alias("length"),
        "older_item_indices",
        "last_event_ts",
    )
