"""Valid events -> per-user histories and padded sequences, and the state a night continues from (pure Spark
transforms; the raw lines' rules are in data/raw_events.py).

Every function here takes and returns DataFrames and uses native Spark functions only (no Python UDFs). A user's
events are ordered by (event_ts, arrival), so a full rebuild and a night give the same sequences.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.window import WindowSpec

from model_lib.config import SessionizeSettings
from model_lib.contracts import (
    EVENT_FIELDS,
    PAD_INDEX,
    STATE_COLUMNS,
    STATE_LAYER_COLUMN,
    UNKNOWN_ITEM_INDEX,
)
from model_lib.progress import say


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
        F.collect_list(F.when(kept_older, F.struct(F.col("event_ts").alias("last_ts"), "item_id", "item_index"))).alias(
            "_kept_older"
        ),
        F.max("_older_total").alias("_older_total"),
    )


OLDER_ITEMS_TYPE = "array<struct<last_ts: timestamp, item_id: string>>"


def _newest_items_first(frame: DataFrame, items: str, cap: int, output: str) -> DataFrame:
    """Adds `output`: the (last_ts, item_id, item_index) structs of column `items`, one per item (its latest time),
    newest first (ties by id), at most `cap`. Natively ordered structs (no comparator lambda), and each step reads
    the previous one's column, so no array is sorted more than once per row."""

    def newest_key(x: Column) -> Column:
        return -F.unix_micros(x["last_ts"])

    def by_item_key(x: Column) -> Column:
        return F.struct(x["item_id"].alias("k"), newest_key(x).alias("n"), x.alias("v"))

    def by_recency_key(x: Column) -> Column:
        return F.struct(x["n"].alias("n"), x["k"].alias("k"), x["v"].alias("v"))

    by_item = frame.withColumn("_by_item", F.sort_array(F.transform(items, by_item_key)))
    latest = by_item.withColumn(
        "_latest",
        # The first of each item's run: its newest (CASE evaluates the look-back only where there is one).
        F.filter("_by_item", lambda x, i: F.when(i == 0, True).otherwise(x["k"] != F.col("_by_item")[i - 1]["k"])),
    )
    newest = latest.withColumn(
        output,
        F.transform(
            F.slice(F.sort_array(F.transform("_latest", by_recency_key)), 1, cap),
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


def users_over_day_events(events: DataFrame, ds: dt.date, limit: int, named: int = 20) -> list[str]:
    """The users (at most `named`, most events first) whose valid events that arrived in dt=ds number more than
    `limit`: a bot or a broken producer. They are named, in the run's stats and log, not dropped: their events
    still enter the sequences, where history_len and max_older_items bound what they cost."""
    heavy = (
        events.where(F.col("arrival.dt") == ds.isoformat())
        .groupBy("user_id")
        .agg(F.count(F.lit(1)).alias("events"))
        .where(F.col("events") > limit)
        .orderBy(F.col("events").desc(), "user_id")
        .limit(named)
        .collect()
    )
    if heavy:
        listed = ", ".join(f"{row['user_id']} ({row['events']:,})" for row in heavy)
        say(
            f"users with more than {limit:,} events on {ds} (RECO_MAX_USER_DAY_EVENTS; at most {named} named): {listed}"
        )
    return [row["user_id"] for row in heavy]
