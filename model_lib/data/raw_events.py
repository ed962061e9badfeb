"""Raw lines -> validated, de-duplicated events (pure Spark transforms): the rules every raw line is judged by.

Every function here takes and returns DataFrames and uses native Spark functions only (no Python UDFs), so the
job in jobs/sessionize.py is extract -> these transforms -> load, and each transform is unit-tested on tiny
DataFrames. Spark 4 runs with ANSI mode on, so every parse that may fail uses a try_* function.

Order. Every raw line carries `arrival` = (dt, file name, line_order): the folder, the file and the position in
the file it came from (`located_lines`; only a rejected line also keeps the file's path, for the quarantine).
Events are ordered by (event_ts, arrival), so equal timestamps keep their input order and the order is the same
whether the lines were read in one full rebuild or one day at a time.

Counts reconcile by construction: every raw line ends up in exactly one of
`valid` (after de-duplication), `duplicate` or `quarantined`. The per-user histories they become: data/events.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from model_lib.config import SessionizeSettings
from model_lib.contracts import (
    ID_FIELDS,
    RAW_FIELDS,
    REASON_BAD_ENCODING,
    REASON_BAD_ID,
    REASON_BAD_TS,
    REASON_FUTURE_TS,
    REASON_MISSING_FIELD,
    REASON_NOT_JSON,
    REASON_TOO_LATE,
    REASON_TOO_LONG,
    REASON_UNKNOWN_EVENT_TYPE,
    REASON_UNREADABLE_FILE,
    REQUIRED_FIELDS,
)

CONTROL_CHARACTER = r"[\x00-\x1F\x7F]"  # never in an id: NUL cannot be stored in PostgreSQL text
# A JSON \u escape of a UTF-16 surrogate that is not half of a pair (`"\ud800"`): the JSON reader turns it into `?`,
# so "u\ud800" and "u\udbff" would both become the user "u?". The backslash before the `u` must itself be unescaped
# (an even run of backslashes before it).
_HIGH_SURROGATE, _LOW_SURROGATE = r"\\u[dD][89abAB][0-9a-fA-F]{2}", r"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
LONE_SURROGATE_ESCAPE = (
    rf"(?<!\\)(?:\\\\)*(?:{_HIGH_SURROGATE}(?!{_LOW_SURROGATE})|(?<!{_HIGH_SURROGATE}){_LOW_SURROGATE})"
)
CORRUPT_FIELD = "_corrupt_record"
RAW_JSON_SCHEMA = T.StructType([T.StructField(name, T.StringType()) for name in [*RAW_FIELDS, CORRUPT_FIELD]])


@dataclass(frozen=True)
class ValidationRules:
    """What a raw line must satisfy to be an event (see `validate`); from the settings by `of`."""

    event_types: tuple[str, ...]
    max_line_chars: int
    max_id_chars: int
    allowed_lateness_hours: int
    future_tolerance_minutes: int

    @classmethod
    def of(cls, sessionize: SessionizeSettings) -> ValidationRules:
        return cls(
            tuple(sessionize.event_types),
            sessionize.max_line_chars,
            sessionize.max_id_chars,
            sessionize.allowed_lateness_hours,
            sessionize.future_tolerance_minutes,
        )


LOCATED_LINE_SCHEMA = (
    "line string, dt string, arrival struct<dt: string, file: string, line: bigint>, source_file string"
)


def arrival(dt: Column, source_file: Column, line_order: Column) -> Column:
    """Where a line came from; orders lines like the input (by day, file, position in the file). It holds the file's
    name, not its path: the files of one dt folder order by name as by path, and the path (some 100 bytes, repeated
    in every event through the de-duplication, the ordering and the stored state) was most of an event's bytes."""
    return F.struct(dt.alias("dt"), F.element_at(F.split(source_file, "/"), -1).alias("file"), line_order.alias("line"))


def located_lines(text: DataFrame) -> DataFrame:
    """Spark's text reader output over dt= folders (`value`, the `dt` partition) -> LOCATED_LINE_SCHEMA: each line
    with its dt, its `arrival` and its file's path (`source_file`, which only a rejected line keeps: see the job)."""
    dt_text = F.col("dt").cast("string")
    path = F.col("_metadata.file_path")
    return text.select(
        F.col("value").alias("line"),
        dt_text.alias("dt"),
        arrival(dt_text, path, F.monotonically_increasing_id()).alias("arrival"),
        path.alias("source_file"),
    )


# The `arrival.line` of a row that stands for a whole raw file that could not be read (no real line is numbered so).
WHOLE_FILE = -1


def unreadable_file_lines(spark: SparkSession, unreadable: list[tuple[str, str, str]]) -> DataFrame:
    """(dt, the file's path, why it cannot be read) per raw file that cannot be read -> one LOCATED_LINE_SCHEMA row
    each, its `line` the reader's error and its arrival.line WHOLE_FILE, so `validate` quarantines the file as one
    unit (unreadable_file) and the counts still reconcile (it is one line read)."""
    rows = [
        (f"unreadable raw file: {why}", day, (day, path.rsplit("/", 1)[-1], WHOLE_FILE), path)
        for day, path, why in unreadable
    ]
    return spark.createDataFrame(rows, LOCATED_LINE_SCHEMA)


def parse_raw_lines(lines: DataFrame) -> DataFrame:
    """Raw text lines -> one row per line with the contract's fields as strings.

    Input columns: `line` (string), `dt` (the raw partition, YYYY-MM-DD), `arrival` (see `arrival`) and
    `source_file` (see `located_lines`).
    Adds `is_json` (false unless the line is one JSON object).
    """
    parsed = F.from_json(
        F.col("line"), RAW_JSON_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_FIELD}
    )
    with_fields = lines.withColumn("_parsed", parsed)
    is_object = (
        F.ltrim(F.col("line")).startswith("{")
        & F.col("_parsed").isNotNull()
        & F.col(f"_parsed.{CORRUPT_FIELD}").isNull()
    )
    return with_fields.select(
        "line",
        "dt",
        "arrival",
        "source_file",
        is_object.alias("is_json"),
        *[F.nullif(F.trim(F.col(f"_parsed.{name}")), F.lit("")).alias(name) for name in RAW_FIELDS],
    )


# Accepted forms of `ts`, checked as text before Spark converts anything, so no value can overflow a conversion:
# - epoch milliseconds: an optional minus and 1-19 digits (at most a long), then range-checked BEFORE the
#   milliseconds are multiplied into Spark's microseconds (timestamp_millis raises on overflow under ANSI);
# - ISO-8601: a 4-digit-year date, optionally a time (seconds and up to 9 fraction digits optional) and an offset
#   `Z` or +-HH[:MM] (an offset beyond +-18:00 does not parse); no offset means UTC.
# Either way the instant must lie in years 0001-9999 UTC (what Parquet, pandas and every warehouse can hold).
EPOCH_MS_PATTERN = r"^-?[0-9]{1,19}$"
ISO_8601_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,9})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
)
MIN_EPOCH_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z (ISO text may add microseconds up to .999999)


def parse_timestamp(ts: Column) -> Column:
    """`ts` text -> TIMESTAMP, or null when it is not one of the accepted forms above. Total: no input raises."""
    is_epoch_ms = ts.rlike(EPOCH_MS_PATTERN)
    millis = F.when(is_epoch_ms, ts.try_cast("long"))  # null beyond the long range
    # The input of timestamp_millis is null unless in range, so nothing depends on how Spark orders the branches.
    from_epoch = F.timestamp_millis(F.when(millis.between(MIN_EPOCH_MS, MAX_EPOCH_MS), millis))
    from_iso = F.try_to_timestamp(F.when(ts.rlike(ISO_8601_PATTERN), ts))
    parsed = F.when(is_epoch_ms, from_epoch).otherwise(from_iso)
    # An offset can move a valid local year-9999 or year-1 time out of range.
    earliest, latest = (
        F.timestamp_micros(F.lit(MIN_EPOCH_MS * 1000)),
        F.timestamp_micros(F.lit(MAX_EPOCH_MS * 1000 + 999)),
    )
    return F.when(parsed.between(earliest, latest), parsed)


def validate(parsed: DataFrame, rules: ValidationRules) -> DataFrame:
    """Adds `event_ts` (timestamp) and `reason` (null for a valid row, else the first broken rule).

    Time rules are relative to the line's dt folder: accepted from `allowed_lateness_hours` before the start of
    the day until `future_tolerance_minutes` after its end.
    """
    ts = parse_timestamp(F.col("ts"))
    day_start = F.try_to_timestamp(F.col("dt"))  # the extract keeps only dt folders that are dates
    accepted_from = day_start - F.make_dt_interval(hours=F.lit(rules.allowed_lateness_hours))
    accepted_until = day_start + F.make_dt_interval(days=F.lit(1), mins=F.lit(rules.future_tolerance_minutes))
    missing = F.lit(False)
    for name in REQUIRED_FIELDS:
        missing = missing | F.col(name).isNull()
    too_long = F.length("line") > rules.max_line_chars
    bad_id = F.lit(False)
    for name in ID_FIELDS:
        too_long = too_long | F.coalesce(F.length(name) > rules.max_id_chars, F.lit(False))
        bad_id = bad_id | F.coalesce(F.col(name).rlike(CONTROL_CHARACTER), F.lit(False))
    reason = (
        F.when(F.col("arrival.line") == WHOLE_FILE, F.lit(REASON_UNREADABLE_FILE))
        .when(too_long, F.lit(REASON_TOO_LONG))
        .when(~F.is_valid_utf8("line") | F.col("line").rlike(LONE_SURROGATE_ESCAPE), F.lit(REASON_BAD_ENCODING))
        .when(~F.col("is_json"), F.lit(REASON_NOT_JSON))
        .when(missing, F.lit(REASON_MISSING_FIELD))
        .when(bad_id, F.lit(REASON_BAD_ID))
        .when(ts.isNull(), F.lit(REASON_BAD_TS))
        .when(~F.col("event_type").isin(list(rules.event_types)), F.lit(REASON_UNKNOWN_EVENT_TYPE))
        .when(ts >= accepted_until, F.lit(REASON_FUTURE_TS))
        .when(ts < accepted_from, F.lit(REASON_TOO_LATE))
    )
    return parsed.withColumns({"event_ts": ts, "reason": reason})


def quarantine_rows(validated: DataFrame) -> DataFrame:
    """The rows that broke a rule, with the raw text and its origin kept so nothing is lost.

    Spark's text reader passes bytes that are not UTF-8 through into its strings, and Parquet would store them so,
    where no other reader (pyarrow, DuckDB, a warehouse) can decode them. So `raw_line` is always valid UTF-8 (each
    invalid sequence replaced by U+FFFD), and a line that was not UTF-8 keeps its exact bytes in `raw_bytes`."""
    line = F.col("line")
    return validated.where(F.col("reason").isNotNull()).select(
        "dt",
        "reason",
        F.make_valid_utf8(line).alias("raw_line"),
        F.when(~F.is_valid_utf8(line), line.cast("binary")).alias("raw_bytes"),
        "source_file",
    )


def dedup_key(event_id: Column, user_id: Column, item_id: Column, event_type: Column, event_ts: Column) -> Column:
    """(user_id, event_id) when the event has an id, otherwise (user_id, item_id, event_type, ts).

    An event id is unique within one user's events only: two producers that number their events from 1 each send
    an `event_id` "1", and two different users' events are never one event.
    """
    return F.coalesce(
        # The user's length first, so no pair of ids can spell another pair's key (an id may hold any character).
        F.concat(F.lit("id:"), F.length(user_id).cast("string"), F.lit(":"), user_id, event_id),
        F.concat_ws("\u0001", F.lit("t"), user_id, item_id, event_type, event_ts.cast("string")),
    )


def deduplicate(valid: DataFrame) -> DataFrame:
    """One row per event, with its `dedup_key`; the first occurrence in input order is kept.

    A re-delivered event therefore never moves in the sequence.
    """
    first = Window.partitionBy("dedup_key").orderBy("arrival")
    keyed = valid.withColumn(
        "dedup_key",
        dedup_key(F.col("event_id"), F.col("user_id"), F.col("item_id"), F.col("event_type"), F.col("event_ts")),
    )
    return keyed.withColumn("_occurrence", F.row_number().over(first)).where("_occurrence = 1").drop("_occurrence")


def drop_seen(events: DataFrame, seen_keys: DataFrame) -> DataFrame:
    """Removes events whose dedup_key an earlier day already delivered (`seen_keys` has a `dedup_key` column)."""
    return events.join(seen_keys.select("dedup_key"), "dedup_key", "left_anti")


def recent_keys(keys: DataFrame, horizon: Column) -> DataFrame:
    """The dedup keys a later day can still repeat: a re-delivered event carries its original ts, and a later day
    only accepts ts from its start minus the allowed lateness, so keys older than that horizon are dropped."""
    return keys.where(F.col("event_ts") >= horizon).select("dedup_key", "event_ts")
