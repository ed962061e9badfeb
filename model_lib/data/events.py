"""Raw events -> validated, de-duplicated events -> per-user histories and padded sequences (pure Spark transforms).

Every function here takes and returns DataFrames and uses native Spark functions only (no Python UDFs), so the
job in jobs/sessionize.py is extract -> these transforms -> load, and each transform is unit-tested on tiny
DataFrames. Spark 4 runs with ANSI mode on, so every parse that may fail uses a try_* function.

Order. Every raw line carries `arrival` = (dt, file name, line_order): the folder, the file and the position in
the file it came from (`located_lines`; only a rejected line also keeps the file's path, for the quarantine).
Events are ordered by (event_ts, arrival), so equal timestamps keep their input order and the order is the same
whether the lines were read in one full rebuild or one day at a time.

Counts reconcile by construction: every raw line ends up in exactly one of
`valid` (after de-duplication), `duplicate` or `quarantined`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import WindowSpec

from model_lib.config import SessionizeSettings
from model_lib.contracts import (
    EVENT_FIELDS,
    ID_FIELDS,
    PAD_INDEX,
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
    STATE_COLUMNS,
    STATE_LAYER_COLUMN,
    UNKNOWN_ITEM_INDEX,
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


@dataclass(frozen=True)
class SequenceRules:
    """How a user's events become a padded sequence (see `user_histories`); from the settings by `of`.
    `seq_len` is the events kept per user: the model's window, or the longer history kept for training windows."""

    seq_len: int
    event_types: tuple[str, ...]
    session_gap_minutes: int
    max_gap_bucket: int
    max_older_items: int  # the older items a user's state keeps, most recent first

    @classmethod
    def of(cls, sessionize: SessionizeSettings) -> SequenceRules:
        return cls(
            sessionize.stored_events,
            tuple(sessionize.event_types),
            sessionize.session_gap_minutes,
            sessionize.max_gap_bucket,
            sessionize.max_older_items,
        )


LOCATED_LINE_SCHEMA = "line string, dt string, arrival struct<dt: string, file: string, line: bigint>, source_file string"


def arrival(dt: Column, source_file: Column, line_order: Column) -> Column:
    """Where a line came from; orders lines like the input (by day, file, position in the file). It holds the file's
    name, not its path: the files of one dt folder order by name as by path, and the path (some 100 bytes, repeated
    in every event through the de-duplication, the ordering and the stored state) was most of an event's bytes."""
    return F.struct(
        dt.alias("dt"), F.element_at(F.split(source_file, "/"), -1).alias("file"), line_order.alias("line")
    )


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


def gap_bucket(gap_seconds: Column, max_bucket: int) -> Column:
    """1 for a user's first event, else 2 + floor(log2(1 + gap seconds)), capped at max_bucket (0 = padding)."""
    log_bucket = F.floor(F.log2(F.greatest(gap_seconds, F.lit(0)) + 1)).cast("int") + 2
    return F.when(gap_seconds.isNull(), F.lit(1)).otherwise(F.least(log_bucket, F.lit(max_bucket)))


def _history_rows(events: DataFrame, previous_state: DataFrame | None) -> DataFrame:
    """New events plus the previous state's stored events (its last L+1 per user): the events still to be ordered.
    The state's older items have no time and no place in the order; `_with_earlier_items` adds them per user."""
    new = events.select("user_id", *EVENT_FIELDS)
    if previous_state is None:
        return new
    stored = previous_state.select("user_id", F.explode("events").alias("e")).select(
        "user_id", *[F.col(f"e.{name}").alias(name) for name in EVENT_FIELDS]
    )
    return new.unionByName(stored)


def user_histories(
    events: DataFrame, vocabulary: DataFrame, rules: SequenceRules, previous_state: DataFrame | None = None
) -> DataFrame:
    """Per user, in one shuffle of the events: the padded sequence of the last L events and the state for the next
    day.

    `events`: de-duplicated valid events (user_id, item_id, event_type, event_ts, session_id, arrival).
    `previous_state`: yesterday's output of this function (its state columns), or None for a full rebuild.
    The state keeps each user's last L+1 events (the extra one gives the oldest window event its time gap) and the
    distinct items of everything older, the `max_older_items` most recent of them (`_older_items`), so merging a day
    into it gives exactly what a full rebuild would, and no user (a bot with millions of distinct items) can grow
    one row past what an executor holds.

    Sequence columns (arrays of length L, oldest first, left-padded with 0):
      item_indices (1 = unknown item), event_type_indices (1-based in rules.event_types), gap_buckets (log2 of
      the seconds since the previous event, 1 = first event of the user), session_indices (1 = the oldest session
      visible in the window; a new session after `session_gap_minutes` of inactivity or a new client session_id),
      event_times (epoch seconds); plus length, older_item_indices (items of events before the window, to exclude
      from recommendations: the stored event just before it and the kept older items) and last_event_ts.
    State columns: events (array of the last L+1 events' EVENT_FIELDS), older_items (array of (last_ts, item_id),
    newest first, at most max_older_items), older_items_dropped (older items cut off by that cap, counted each time
    one is cut: an item cut, seen again and cut again counts twice, where a full rebuild counts it once).
    L is rules.seq_len: the model's window, or the longer history_len kept for training windows.
    """
    seq_len = rules.seq_len
    ranked = _ranked_events(_history_rows(events, previous_state), vocabulary, rules)
    in_window = F.col("recency") <= seq_len
    # The oldest event in the window opens session 1 whether or not a session started there.
    counted_start = F.when(F.col("recency") < F.least(F.col("_events"), F.lit(seq_len)), F.col("_starts")).otherwise(0)
    # Sessions started from here to the oldest event, as the user's total minus those newer than here: a running
    # sum, where a frame from here to the end would re-add the rest of the user's events at every event.
    newer_and_here = _newest_first().rowsBetween(Window.unboundedPreceding, Window.currentRow)
    from_here_on = F.sum(counted_start).over(Window.partitionBy("user_id")) - F.sum(counted_start).over(newer_and_here)
    windowed = _older_candidates(ranked.withColumn("session_index", from_here_on + counted_start + 1), seq_len)
    grouped = _per_user(windowed, in_window, seq_len, rules.max_older_items)
    if previous_state is not None:
        grouped = _with_earlier_items(grouped, previous_state, vocabulary)
    return _padded_sequences(_capped_older_items(grouped, rules.max_older_items), seq_len)


def _newest_first() -> WindowSpec:
    """Each user's events newest first (equal times: the later arrival first)."""
    return Window.partitionBy("user_id").orderBy(F.col("event_ts").desc(), F.col("arrival").desc())


def _ranked_events(rows: DataFrame, vocabulary: DataFrame, rules: SequenceRules) -> DataFrame:
    """History rows with their item and event-type indices, recency (1 = newest), gap bucket, whether a session
    starts there, and the user's count of events."""
    type_index = F.array_position(F.array(*[F.lit(t) for t in rules.event_types]), F.col("event_type")).cast("int")
    indexed = rows.join(F.broadcast(vocabulary.select("item_id", "item_index")), "item_id", "left").withColumns(
        {"item_index": F.coalesce(F.col("item_index"), F.lit(UNKNOWN_ITEM_INDEX)), "event_type_index": type_index}
    )
    newest_first = _newest_first()
    previous_ts = F.lead("event_ts").over(newest_first)
    gap_seconds = F.col("event_ts").cast("double") - previous_ts.cast("double")
    starts_session = (
        previous_ts.isNull()
        | (gap_seconds > rules.session_gap_minutes * 60)
        | ~F.col("session_id").eqNullSafe(F.lead("session_id").over(newest_first))
    )
    # One withColumns, not four withColumn: each call re-analyses the whole plan (some 30 ms apiece on a night's
    # freshly started JVM).
    return indexed.withColumns(
        {
            "recency": F.row_number().over(newest_first),
            "gap_bucket": gap_bucket(gap_seconds, rules.max_gap_bucket),
            "_starts": starts_session.cast("int"),
            "_events": F.count(F.lit(1)).over(Window.partitionBy("user_id")),
        }
    )


def _older_candidates(windowed: DataFrame, seq_len: int) -> DataFrame:
    """Marks each user's older items among the events beyond the stored ones (recency > L + 1): `_older` on the
    newest such event of each item, `_older_rank` (1 = the most recent item; ties by id) and `_older_total` (the
    user's distinct older items). Window functions over the partitioning by user the ordering already made: sorts,
    no shuffle, and no buffer that holds a user's items at once."""
    beyond = F.col("recency") > seq_len + 1
    per_item = Window.partitionBy("user_id", "item_id").orderBy(
        beyond.desc(), F.col("event_ts").desc(), F.col("arrival").desc()
    )
    marked = windowed.withColumn("_older", beyond & (F.row_number().over(per_item) == 1))
    per_user = Window.partitionBy("user_id")
    newest_items = per_user.orderBy(F.col("_older").desc(), F.col("event_ts").desc(), F.col("item_id"))
    return marked.withColumns(
        {
            "_older_rank": F.row_number().over(newest_items),
            "_older_total": F.sum(F.col("_older").cast("long")).over(per_user),
        }
    )


def _per_user(windowed: DataFrame, in_window: Column, seq_len: int, max_older_items: int) -> DataFrame:
    """One row per user: the window's events (oldest first), the most recent older items (at most max_older_items,
    see `_older_candidates`), last event time, and the state."""
    stored = F.col("recency") <= seq_len + 1
    kept_older = F.col("_older") & (F.col("_older_rank") <= max_older_items)
    return windowed.groupBy("user_id").agg(
        F.sort_array(
            F.collect_list(
                F.when(
                    in_window,
                    F.struct(
                        (-F.col("recency")).alias("order"),
                        F.col("item_index").alias("item"),
                        F.col("event_type_index").alias("event_type"),
                        F.col("gap_bucket").alias("gap"),
                        F.col("session_index").cast("int").alias("session"),
                        F.unix_timestamp("event_ts").alias("time"),
                    ),
                )
            )
        ).alias("_window"),
        # The one stored event outside the window (recency L + 1): excluded like the older items.
        F.collect_set(F.when(~in_window & stored, F.col("item_index"))).alias("_before_window"),
        F.max("event_ts").alias("last_event_ts"),
        F.sort_array(F.collect_list(F.when(stored, F.struct(*EVENT_FIELDS)))).alias("events"),
        F.collect_list(
            F.when(kept_older, F.struct(F.col("event_ts").alias("last_ts"), "item_id", "item_index"))
        ).alias("_kept_older"),
        F.max("_older_total").alias("_older_total"),
    )


OLDER_ITEMS_TYPE = "array<struct<last_ts: timestamp, item_id: string>>"


def _newest_items_first(frame: DataFrame, items: str, cap: int, output: str) -> DataFrame:
    """Adds `output`: the (last_ts, item_id, item_index) structs of column `items`, one per item (its latest time),
    newest first (ties by id), at most `cap`. Natively ordered structs (no comparator lambda), and each step reads
    the previous one's column, so no array is sorted more than once per row."""

    def newest_key(x: Column) -> Column:
        return -F.unix_micros(x["last_ts"])

    by_item = frame.withColumn(
        "_by_item", F.sort_array(F.transform(items, lambda x: F.struct(x["item_id"].alias("k"), newest_key(x).alias("n"), x.alias("v"))))
    )
    latest = by_item.withColumn(
        "_latest",
        # The first of each item's run: its newest (CASE evaluates the look-back only where there is one).
        F.filter("_by_item", lambda x, i: F.when(i == 0, True).otherwise(x["k"] != F.col("_by_item")[i - 1]["k"])),
    )
    newest = latest.withColumn(
        output,
        F.transform(
            F.slice(F.sort_array(F.transform("_latest", lambda x: F.struct(x["n"].alias("n"), x["k"].alias("k"), x["v"].alias("v")))), 1, cap),
            lambda x: x["v"],
        ),
    )
    return newest.drop("_by_item", "_latest")


def _with_earlier_items(grouped: DataFrame, previous_state: DataFrame, vocabulary: DataFrame) -> DataFrame:
    """Adds the older items the previous state kept (`older_items`, at most the cap per user, so this join and the
    index look-up stay small), with their indices in today's vocabulary, to each user's `_kept_older` (merged and
    cut to the cap by `_capped_older_items`), and the count it had dropped."""
    earlier = (
        previous_state.select("user_id", F.explode("older_items").alias("o"))
        .select("user_id", "o.last_ts", "o.item_id")
        .join(F.broadcast(vocabulary.select("item_id", "item_index")), "item_id", "left")
        .groupBy("user_id")
        .agg(
            F.collect_list(
                F.struct(
                    "last_ts", "item_id", F.coalesce(F.col("item_index"), F.lit(UNKNOWN_ITEM_INDEX)).alias("item_index")
                )
            ).alias("_earlier_items")
        )
    )
    dropped = previous_state.select("user_id", F.col("older_items_dropped").alias("_dropped_before"))
    empty = F.array().cast("array<struct<last_ts: timestamp, item_id: string, item_index: int>>")
    earlier_items = F.coalesce(F.col("_earlier_items"), empty)
    return (
        grouped.join(dropped, "user_id", "left")
        .join(earlier, "user_id", "left")
        .withColumns(
            {
                "_kept_older": F.concat(F.col("_kept_older"), earlier_items),
                # Items of both lists count once: today's total plus yesterday's kept that today's did not hold.
                "_older_total": F.col("_older_total")
                + F.size(earlier_items)
                - F.size(
                    F.array_intersect(
                        F.transform("_kept_older", lambda item: item["item_id"]),
                        F.transform(earlier_items, lambda item: item["item_id"]),
                    )
                ),
            }
        )
        .drop("_earlier_items")
    )


def _capped_older_items(grouped: DataFrame, cap: int) -> DataFrame:
    """`_kept_older` (today's and yesterday's kept older items) -> `older_items`, the newest `cap` of them, their
    indices with the one stored event's before the window (`older_item_indices`, what exclude_seen excludes beyond
    the window), and `older_items_dropped`, the items cut off (plus those the previous state had cut). Keeping the
    newest N of (yesterday's newest N + today's) equals the newest N of everything, because an item's latest time
    only grows; the count of cuts does not (an item cut twice counts twice)."""
    before = F.coalesce(F.col("_dropped_before"), F.lit(0)) if "_dropped_before" in grouped.columns else F.lit(0)
    capped = _newest_items_first(grouped, "_kept_older", cap, "_capped")
    return capped.withColumns(
        {
            "older_items": F.transform(
                "_capped", lambda item: F.struct(item["last_ts"].alias("last_ts"), item["item_id"].alias("item_id"))
            ).cast(OLDER_ITEMS_TYPE),
            "older_items_dropped": (F.greatest(F.col("_older_total") - cap, F.lit(0)) + before).cast("long"),
            "older_item_indices": F.array_sort(
                F.array_distinct(
                    F.concat(F.col("_before_window"), F.transform("_capped", lambda item: item["item_index"]))
                )
            ),
        }
    )


def _padded_sequences(grouped: DataFrame, seq_len: int) -> DataFrame:
    """The window's fields as arrays of length seq_len, left-padded with 0, beside the other columns."""

    def left_padded(field: str, cast: str = "int") -> Column:
        # The field of every struct at once (generated code), not a lambda per element (interpreted): in a warm JVM
        # 0.5 s less for the 1M night's 2,632 users' five arrays (a cold night shows no difference), and the work
        # grows with the users a run orders.
        values = F.col("_window").getField(field).cast(f"array<{cast}>")
        padding = F.array_repeat(F.lit(PAD_INDEX).cast(cast), F.lit(seq_len) - F.size(values))
        return F.concat(padding, values)

    return grouped.select(
        "user_id",
        left_padded("item").alias("item_indices"),
        left_padded("event_type").alias("event_type_indices"),
        left_padded("gap").alias("gap_buckets"),
        left_padded("session").alias("session_indices"),
        left_padded("time", "long").alias("event_times"),
        F.size("_window").alias("length"),
        "older_item_indices",
        "last_event_ts",
        "events",
        "older_items",
        "older_items_dropped",
    )


def touched_state(previous_users: DataFrame, events: DataFrame, changed_items: DataFrame | None) -> DataFrame:
    """Yesterday's state (its layers: STATE_COLUMNS plus `layer`, see state.py) -> the newest state row of each user
    the day touched: those with new `events`, and those whose stored items changed index in today's vocabulary
    (`changed_items`: an item_id column of the items that entered, left or moved). `user_histories(events, ...,
    previous_state=<these rows>)` gives today's rows of exactly those users; every other user keeps yesterday's
    sequence row (`carried_sequences`) and state row, and merged with those the result equals `user_histories` over
    all history (tests/integration/test_sessionize_job.py).

    Both sets of touched users are joins, not driver-side lists: no hint forces the day's users into every task,
    and no changed item becomes a literal in the plan, so the plan's size does not grow with the data."""
    touched_users = events.select("user_id")
    if changed_items is not None:
        stored_items = F.concat(
            F.transform("events", lambda event: event["item_id"]),
            F.transform("older_items", lambda item: item["item_id"]),
        )
        # Older layers may name items the user's newest row no longer holds: recomputing such a user gives the
        # same row again, so the superset is harmless and spares a newest-row pass over every user.
        holding_changed = (
            previous_users.select("user_id", F.explode(stored_items).alias("item_id"))
            .join(changed_items.select("item_id"), "item_id", "left_semi")
            .select("user_id")
        )
        touched_users = touched_users.unionByName(holding_changed)
    return newest_state_rows(previous_users.join(touched_users.distinct(), "user_id", "left_semi"))


def newest_state_rows(layers: DataFrame) -> DataFrame:
    """Each user's row from the newest layer (STATE_LAYER_COLUMN) that has one (STATE_COLUMNS): a night writes only
    the rows of the users it touched, as a layer of its own, so a user's older rows stay behind in older layers."""
    newest = Window.partitionBy("user_id").orderBy(F.col(STATE_LAYER_COLUMN).desc())
    return layers.withColumn("_newest", F.row_number().over(newest)).where("_newest = 1").select(STATE_COLUMNS)


def carried_sequences(previous_sequences: DataFrame, touched: DataFrame) -> DataFrame:
    """Yesterday's sequence rows of the users the day did not touch (`touched` has their user_id), as they were."""
    return previous_sequences.join(touched.select("user_id"), "user_id", "left_anti")
