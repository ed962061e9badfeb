"""The sessionize transforms on tiny DataFrames with a real local SparkSession."""

import datetime as dt
import json
import re

import pandas as pd
import pytest
from pyspark.sql import functions as F

from model_lib.config import get_settings
from model_lib.data import events as ev
from model_lib.data import raw_events
from model_lib.data.vocabulary import item_counts, ranked_candidates, stable_vocabulary

pytestmark = pytest.mark.spark
TYPES = ["view", "add_to_cart", "purchase"]
T0 = 1_700_000_000_000  # epoch ms: 2023-11-14T22:13:20Z
DAY = "2023-11-14"
HOUR = 3_600_000


@pytest.fixture
def rules(tmp_path):
    return get_settings(
        data_dir=tmp_path, event_types=TYPES, seq_len=4, history_len=0, max_line_chars=400, max_id_chars=20
    )


def line(user="u1", item="a", kind="view", ts=T0, **extra):
    return json.dumps({"user_id": user, "item_id": item, "event_type": kind, "ts": ts, **extra})


def lines_frame(spark, lines, day=DAY):
    rows = [(text, day, (day, "part-0", i), f"file:/raw/dt={day}/part-0") for i, text in enumerate(lines)]
    return spark.createDataFrame(rows, raw_events.LOCATED_LINE_SCHEMA)


def validated(spark, lines, rules, day=DAY):
    return raw_events.validate(
        raw_events.parse_raw_lines(lines_frame(spark, lines, day)), raw_events.ValidationRules.of(rules.sessionize)
    )


def valid_events(spark, lines, rules):
    return raw_events.deduplicate(validated(spark, lines, rules).where("reason IS NULL"))


def histories(spark, lines, rules, min_count=1, previous_vocabulary=None):
    events = valid_events(spark, lines, rules)
    counts = item_counts(events).toPandas()
    vocabulary = stable_vocabulary(ranked_candidates(counts, min_count, 100), previous_vocabulary)
    frame = spark.createDataFrame(vocabulary, "item_id string, item_index int, count long")
    rows = ev.user_histories(events, frame, ev.SequenceRules.of(rules.sessionize)).collect()
    return {r["user_id"]: r for r in rows}, dict(zip(vocabulary["item_id"], vocabulary["item_index"], strict=True))


def test_every_broken_rule_has_its_reason_and_keeps_the_raw_text(spark, rules):
    raw = [
        line(),
        "{not json",
        "[1, 2]",
        json.dumps({"item_id": "a", "event_type": "view", "ts": T0}),
        line(user=""),
        line(ts="yesterday"),
        line(ts=1.5e12),
        line(kind="hover"),
        line(ts="2023-11-14T23:20:00+01:00"),
        line(item="x" * 21),  # an id over max_id_chars
        line(extra="y" * 400),  # a line over max_line_chars
        line(ts=T0 + 3 * HOUR),  # 01:13 next day: within the 60 min tolerance? no -> future
        line(ts=T0 + 2 * HOUR),  # 00:13 next day: within the tolerance
        line(ts=T0 - 50 * HOUR),  # two days late: within the 72 h lateness
        line(ts=T0 - 100 * HOUR),  # four days late
    ]
    rows = validated(spark, raw, rules).orderBy("arrival").collect()
    assert [r["reason"] for r in rows] == [
        None,
        "not_json",
        "not_json",
        "missing_field",
        "missing_field",
        "bad_ts",
        "bad_ts",
        "unknown_event_type",
        None,
        "too_long",
        "too_long",
        "future_ts",
        None,
        None,
        "too_late",
    ]
    assert rows[8]["event_ts"] == dt.datetime(2023, 11, 14, 22, 20)
    quarantine = raw_events.quarantine_rows(validated(spark, raw, rules)).collect()
    rejected = [text for text, row in zip(raw, rows, strict=True) if row["reason"]]
    assert sorted(r["raw_line"] for r in quarantine) == sorted(rejected)
    assert {r["dt"] for r in quarantine} == {DAY}


def test_a_line_that_is_not_utf8_is_quarantined_with_its_exact_bytes(spark, rules, tmp_path):
    """Spark's text reader passes any bytes into its strings; stored so in Parquet they break every other reader.
    Such a line is quarantined as bad_encoding, its raw_line readable everywhere and its bytes kept exactly."""
    latin1 = line(user="zoe").encode().replace(b"zoe", "zoë".encode("latin-1"))
    raw = [line().encode(), latin1, b"\xff\xfe" + line().encode(), b"\xed\xb2\x80"]
    rows = [(text, DAY, (DAY, "part-0", i), "part-0") for i, text in enumerate(raw)]
    frame = spark.createDataFrame(
        rows, raw_events.LOCATED_LINE_SCHEMA.replace("line string", "line binary", 1)
    ).withColumn("line", F.col("line").cast("string"))  # what spark.read.text makes of these bytes
    checked = raw_events.validate(raw_events.parse_raw_lines(frame), raw_events.ValidationRules.of(rules.sessionize))
    assert [r["reason"] for r in checked.orderBy("arrival").collect()] == [None, *["bad_encoding"] * 3]

    raw_events.quarantine_rows(checked).write.parquet(str(tmp_path / "quarantine"))
    stored = pd.read_parquet(tmp_path / "quarantine").sort_values("raw_bytes")  # pyarrow, not Spark, reads it
    assert sorted(stored["raw_bytes"]) == sorted(raw[1:])
    assert all("\ufffd" in text and text.isprintable() for text in stored["raw_line"])


def test_an_id_with_a_control_character_is_quarantined(spark, rules):
    """A NUL in an id would pass into sequences and recommendations, then fail every PostgreSQL publish."""
    raw = [line(user="u\u0000"), line(item="a\tb"), line(session_id="s\x7f"), line(event_id="e\n"), line(user="zoë 💥")]
    reasons = [r["reason"] for r in validated(spark, raw, rules).orderBy("arrival").collect()]
    assert reasons == ["bad_id"] * 4 + [None]


def test_an_escaped_lone_surrogate_is_bad_encoding_and_never_merges_two_users(spark, rules):
    """The JSON reader turns "\\ud800" and "\\udfff" alike into `?`: "u\\ud800" would be the user "u?". A pair (an
    emoji, json.dumps's escapes) is valid, and so is an escaped backslash followed by the text "ud800"."""
    raw = [
        line(user="u\ud800"),
        line(user="u\udfff"),
        line(item="a\ud800\ud83d\udca5"),
        line(user="u\U0001f4a5"),
        line(user="u\\ud800"),
    ]
    rows = validated(spark, raw, rules).orderBy("arrival").collect()
    assert [r["reason"] for r in rows] == ["bad_encoding"] * 3 + [None, None]
    assert [r["user_id"] for r in rows[3:]] == ["u\U0001f4a5", "u\\ud800"]


def test_dedup_by_event_id_else_by_content_keeps_first_occurrence(spark, rules):
    raw = [
        line(item="a", event_id="e1", value=1),
        line(item="a", event_id="e1", value=2),  # same id: duplicate even though the value differs
        line(item="b"),
        line(item="b"),  # no id: same (user, item, type, ts) is a duplicate
        line(item="b", ts=T0 + 1),
        # An event id is one user's: another producer's "e1" for another user is another event, and no pair of
        # (user, id) spells another pair's key.
        line(user="u2", item="a", event_id="e1"),
        line(user="u1e", item="a", event_id="1"),
        line(user="u", item="a", event_id="1e1"),
    ]
    kept = valid_events(spark, raw, rules).orderBy("arrival").collect()
    assert [(r["user_id"], r["item_id"], r["value"]) for r in kept] == [
        ("u1", "a", "1"),
        ("u1", "b", None),
        ("u1", "b", None),
        ("u2", "a", None),
        ("u1e", "a", None),
        ("u", "a", None),
    ]
    assert [r["arrival"]["line"] for r in kept] == [0, 2, 4, 5, 6, 7]


def test_an_arrival_holds_the_files_name_which_orders_as_its_path(spark):
    folder = "file:/lake/raw/events/dt=2023-11-14"
    paths = [f"{folder}/part-00010.jsonl.gz", f"{folder}/part-00002.jsonl.gz", f"{folder}/part-00002.jsonl.gz"]
    rows = [(path, line, index) for index, (path, line) in enumerate(zip(paths, [0, 7, 3], strict=True))]
    frame = spark.createDataFrame(rows, "path string, line bigint, index int")
    located = frame.withColumn("arrival", raw_events.arrival(F.lit(DAY), F.col("path"), F.col("line")))
    by_path = [row["index"] for row in located.orderBy("path", "line").collect()]
    by_arrival = located.orderBy("arrival").collect()
    assert [row["index"] for row in by_arrival] == by_path == [2, 1, 0]
    assert [tuple(row["arrival"]) for row in by_arrival] == [
        (DAY, "part-00002.jsonl.gz", 3),
        (DAY, "part-00002.jsonl.gz", 7),
        (DAY, "part-00010.jsonl.gz", 0),
    ]


def test_a_later_day_repeating_a_recent_key_is_a_duplicate(spark, rules):
    first_day = valid_events(spark, [line(item="a", event_id="e1"), line(item="b")], rules)
    keys = raw_events.recent_keys(first_day, F.to_timestamp(F.lit("2023-11-12")))
    next_day = raw_events.deduplicate(
        validated(spark, [line(item="b"), line(item="c")], rules, day="2023-11-15").where("reason IS NULL")
    )
    assert [r["item_id"] for r in raw_events.drop_seen(next_day, keys).collect()] == ["c"]
    assert raw_events.recent_keys(first_day, F.to_timestamp(F.lit("2023-11-15"))).count() == 0  # past the horizon


def test_sessions_gaps_and_the_last_l_events_per_user(spark, rules):
    minute = 60_000
    raw = [
        line(item="a", ts=T0),
        line(item="b", ts=T0 + 10 * minute),
        line(item="c", kind="add_to_cart", ts=T0 + 50 * minute),  # 40 min later: new session
        line(item="x", kind="purchase", ts=T0 + 51 * minute, session_id="s9"),  # client session changes
        line(item="b", ts=T0 + 52 * minute, session_id="s9"),
        line(user="u2", item="a", ts=T0),
    ]
    rows, index = histories(spark, raw, rules)
    u1 = rows["u1"]
    assert u1["item_indices"] == [index[i] for i in ["b", "c", "x", "b"]]  # the oldest event (a) fell out
    assert u1["older_item_indices"] == [index["a"]]
    assert u1["event_type_indices"] == [1, 2, 3, 1]
    assert u1["gap_buckets"] == [2 + 9, 2 + 11, 2 + 5, 2 + 5]  # 600 s -> floor(log2(601)) = 9, 2400 s -> 11
    assert u1["session_indices"] == [1, 2, 3, 3]
    assert u1["event_times"][-1] == (T0 + 52 * minute) // 1000 and u1["length"] == 4
    assert [e["item_id"] for e in u1["events"]] == ["a", "b", "c", "x", "b"]  # L + 1 kept for the next day
    assert rows["u2"]["item_indices"] == [0, 0, 0, index["a"]]
    assert rows["u2"]["gap_buckets"] == [0, 0, 0, 1] and rows["u2"]["session_indices"] == [0, 0, 0, 1]


def test_items_outside_the_vocabulary_are_unknown(spark, rules):
    raw = [line(item=i, ts=T0 + k) for k, i in enumerate("aaabbc")]
    rows, index = histories(spark, raw, rules, min_count=2)
    assert index == {"a": 2, "b": 3}
    assert rows["u1"]["item_indices"] == [2, 3, 3, 1]


def test_vocabulary_keeps_indices_and_reuses_freed_ones():
    counts = pd.DataFrame({"item_id": list("abcdef"), "count": [9, 8, 7, 1, 6, 6]})
    day1 = stable_vocabulary(ranked_candidates(counts, min_count=2, max_size=3), None)
    assert dict(zip(day1["item_id"], day1["item_index"], strict=True)) == {"a": 2, "b": 3, "c": 4}
    counts["count"] = [9, 8, 7, 1, 20, 10]  # e and f overtake c and b; max_size 3 evicts two
    day2 = stable_vocabulary(ranked_candidates(counts, min_count=2, max_size=3), day1)
    assert dict(zip(day2["item_id"], day2["item_index"], strict=True)) == {"a": 2, "e": 3, "f": 4}
    day3 = stable_vocabulary(ranked_candidates(counts, min_count=2, max_size=5), day2)
    assert dict(zip(day3["item_id"], day3["item_index"], strict=True)) == {"a": 2, "e": 3, "f": 4, "b": 5, "c": 6}


def test_histories_take_one_shuffle_by_user(spark, rules):
    events = valid_events(spark, [line(item=i, ts=T0 + k) for k, i in enumerate("abcab")], rules)
    vocabulary = spark.createDataFrame([("a", 2, 2)], "item_id string, item_index int, count long")
    plan = (
        ev.user_histories(events, vocabulary, ev.SequenceRules.of(rules.sessionize))
        ._jdf.queryExecution()
        .executedPlan()
        .toString()
    )
    # the window and the aggregation share one exchange; the vocabulary join is broadcast
    assert plan.count("Exchange hashpartitioning(user_id") == 1 and "BroadcastHashJoin" in plan


def test_every_timestamp_at_its_limits_parses_as_the_contract_says_and_nothing_raises(spark, rules):
    """Digit counts 1..25, signs, exponents, fractions, leading zeros, years 0 / 1 / 9999 / 10000+, offsets around
    +-18:00, and the limits of the long range before and after the millis -> micros multiplication: as JSON strings
    and, where JSON allows it, as JSON numbers. Spark's result must equal the Python oracle for every one."""
    from helpers.timestamp_cases import boundary_values, expected_micros

    texts = boundary_values()
    raw = [line(ts=text) for text in texts]
    as_numbers = [text for text in texts if re.fullmatch(r"-?(0|[1-9][0-9]*)", text)]
    raw += [line(ts=int(text)) for text in as_numbers]
    expected = [expected_micros(text) for text in texts + as_numbers]
    rows = (
        validated(spark, raw, rules)
        .select("arrival.line", F.unix_micros("event_ts").alias("micros"), "reason")
        .orderBy("line")
        .collect()
    )
    assert [row["micros"] for row in rows] == expected
    reasons = [row["reason"] for row in rows]
    # An unparseable ts is bad_ts; a blank one is no ts at all (missing_field); a parsed one may still be outside
    # the day's window (too_late / future_ts), which is a different rule.
    blank = [not text.strip(" ") for text in texts + as_numbers]
    wanted = ["missing_field" if empty else "bad_ts" for empty in blank]
    for reason, micros, want in zip(reasons, expected, wanted, strict=True):
        assert reason == want if micros is None else reason in (None, "too_late", "future_ts")
    assert reasons.count("bad_ts") > 200 and sum(m is not None for m in expected) > 100  # both sides of each limit


def test_folders_that_are_not_dates_are_not_raw_days(spark, rules, tmp_path):
    """A stray `dt=` folder whose name is no YYYY-MM-DD day would otherwise reach the day-window conversion, where
    no timestamp check can parse it (`20231113` and `2023-W46-1` are dates to Python 3.11's fromisoformat)."""
    from jobs.sessionize import extract_raw_lines
    from model_lib.data.state import Plan

    for folder in ("dt=2023-11-14", "dt=0000-00-00", "dt=garbage", "dt=20231113", "dt=2023-W46-1"):
        (rules.lake.raw_events_dir / folder).mkdir(parents=True)
        (rules.lake.raw_events_dir / folder / "part-0.jsonl").write_text(line() + "\n")
    lines = extract_raw_lines(spark, rules, dt.date(2023, 11, 14), Plan("full", "test"))
    assert [row["dt"] for row in lines.collect()] == ["2023-11-14"]


def test_idle_item_counts_below_the_vocabulary_floor_are_forgotten_the_same_way_nightly_and_in_a_rebuild(spark):
    """state/item_counts kept every id ever seen (a producer of random ids grew it without bound). An id below
    min_item_count idle for more than idle_days leaves it; one that ever reached min_item_count never does."""
    from model_lib.data.vocabulary import running_item_counts

    start = dt.date(2024, 1, 1)
    history = {  # arrival day offset -> items of that day's events
        0: ["junk", "junk", "a", "a", "a", "b", "b", "b"],
        40: ["a", "a", "b"],  # a reaches 5 within its first stretch: kept forever
        100: ["late"],
        140: ["b"],  # b: 4 events, then idle 100 days: forgotten, and counts afresh
        180: ["late", "late", "late", "late"],  # late came back within 90 days: 5
        260: ["b", "b"],
    }
    rows = [(item, (str(start + dt.timedelta(days=day)), "f", 0)) for day, items in history.items() for item in items]
    events = spark.createDataFrame(rows, "item_id string, arrival struct<dt: string, file: string, line: bigint>")

    def as_dict(frame):
        return {row["item_id"]: (row["count"], row["last_day"]) for row in frame.collect()}

    nightly = None
    for offset in sorted({*history, 95, 190, 235, 270}):
        ds = start + dt.timedelta(days=offset)
        today = events.where(F.col("arrival.dt") == str(ds))
        counted = running_item_counts(today, nightly, ds, min_count=5, idle_days=90)
        nightly = spark.createDataFrame(counted.collect(), counted.schema)  # the state as the next night reads it
        full = running_item_counts(events.where(F.col("arrival.dt") <= str(ds)), None, ds, min_count=5, idle_days=90)
        assert as_dict(nightly) == as_dict(full), ds

    def day(offset):
        return start + dt.timedelta(days=offset)

    assert as_dict(nightly) == {"a": (5, day(40)), "late": (5, day(180)), "b": (2, day(260))}


def test_a_days_item_counts_reach_the_driver_as_the_top_ids_and_one_row_for_the_rest(spark, rules):
    """recommend read the day's count of every distinct item id into the driver (a producer of random ids: millions
    of rows); the table holds the top ids and one null-id row for the others, so the known share only gets stricter."""
    from model_lib.data.vocabulary import known_share, top_item_counts

    events = valid_events(spark, [line(item=i, ts=T0 + k) for k, i in enumerate("aaabbcdefg")], rules)
    counts = top_item_counts(events, top=2).toPandas()
    assert counts.sort_values("count", ascending=False).values.tolist() == [[None, 5], ["a", 3], ["b", 2]]
    vocabulary = pd.DataFrame({"item_id": ["a", "b", "c"]})
    assert known_share(vocabulary, counts) == 0.5  # c is in the tail: counted as unknown
    assert top_item_counts(events, top=50).toPandas()["count"].sum() == 10
