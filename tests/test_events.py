"""The sessionize transforms on tiny DataFrames with a real local SparkSession."""

import datetime as dt
import json

import pytest

from model_lib import events as ev

pytestmark = pytest.mark.spark
TYPES = ["view", "add_to_cart", "purchase"]
T0 = 1_700_000_000_000  # epoch ms


def line(user="u1", item="a", kind="view", ts=T0, **extra):
    return json.dumps({"user_id": user, "item_id": item, "event_type": kind, "ts": ts, **extra})


def lines_frame(spark, lines):
    return spark.createDataFrame(
        [(text, "2023-11-14", i) for i, text in enumerate(lines)], "line string, dt string, line_order long"
    )


def validated(spark, lines):
    return ev.validate(ev.parse_raw_lines(lines_frame(spark, lines)), TYPES)


def test_every_broken_rule_has_its_reason_and_keeps_the_raw_text(spark):
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
    ]
    rows = validated(spark, raw).orderBy("line_order").collect()
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
    ]
    assert rows[8]["event_ts"] == dt.datetime(2023, 11, 14, 22, 20)
    quarantine = ev.quarantine_rows(validated(spark, raw)).collect()
    assert sorted(r["raw_line"] for r in quarantine) == sorted(raw[1:8])


def test_dedup_by_event_id_else_by_content_keeps_first_occurrence(spark):
    raw = [
        line(item="a", event_id="e1", value=1),
        line(item="a", event_id="e1", value=2),  # same id: duplicate even though the value differs
        line(item="b"),
        line(item="b"),  # no id: same (user, item, type, ts) is a duplicate
        line(item="b", ts=T0 + 1),
    ]
    valid = validated(spark, raw).where("reason IS NULL")
    kept = ev.deduplicate(valid).orderBy("line_order").collect()
    assert [(r["item_id"], r["value"]) for r in kept] == [("a", "1"), ("b", None), ("b", None)]
    assert [r["line_order"] for r in kept] == [0, 2, 4]


def test_vocabulary_ranks_by_frequency_and_drops_rare_items(spark):
    raw = [line(item=i, ts=T0 + k) for k, i in enumerate("aaabbc")]
    valid = validated(spark, raw).where("reason IS NULL")
    vocab = {r["item_id"]: r["item_index"] for r in ev.build_vocabulary(valid, min_count=2).collect()}
    assert vocab == {"a": 2, "b": 3}


def test_sessions_split_after_the_gap_and_on_client_session_change(spark):
    minute = 60_000
    raw = [
        line(item="a", ts=T0),
        line(item="b", ts=T0 + 10 * minute),
        line(item="c", ts=T0 + 50 * minute),  # 40 min later: new session
        line(item="d", ts=T0 + 51 * minute, session_id="s9"),  # client session changes: new session
        line(user="u2", item="a", ts=T0),
    ]
    valid = validated(spark, raw).where("reason IS NULL")
    rows = ev.sessionize(valid, gap_minutes=30, max_gap_bucket=20).orderBy("user_id", "event_ts").collect()
    u1 = [r for r in rows if r["user_id"] == "u1"]
    assert [r["session_index"] for r in u1] == [0, 0, 1, 2]
    assert [r["position_in_session"] for r in u1] == [0, 1, 0, 0]
    assert u1[0]["gap_bucket"] == 1  # first event of a user
    assert u1[1]["gap_bucket"] == 2 + 9  # 600 s -> floor(log2(601)) = 9


def test_sequences_are_left_padded_last_l_events_in_time_order(spark, settings):
    raw = [
        line(item=item, kind=kind, ts=T0 + k * 1000)
        for k, (item, kind) in enumerate(
            [("a", "view"), ("b", "view"), ("c", "add_to_cart"), ("x", "purchase"), ("b", "view")]
        )
    ]
    raw.append(line(user="u2", item="a", ts=T0))
    valid = validated(spark, raw).where("reason IS NULL")
    vocab = ev.build_vocabulary(valid, min_count=2)  # a, b known; c and x are unknown (index 1)
    indexed = ev.index_events(ev.sessionize(valid, 30, 20), vocab, TYPES)
    rows = {r["user_id"]: r for r in ev.last_events_as_sequences(indexed, seq_len=4).collect()}
    a, b = 2, 3
    assert rows["u1"]["item_indices"] == [b, 1, 1, b]  # the oldest event (a) fell out of the window
    assert rows["u1"]["event_type_indices"] == [1, 2, 3, 1]
    assert rows["u1"]["older_item_indices"] == [a]
    assert rows["u1"]["length"] == 4
    assert rows["u2"]["item_indices"] == [0, 0, 0, a]
    assert rows["u2"]["gap_buckets"] == [0, 0, 0, 1]


def test_synthetic_day_counts_reconcile_through_the_job(spark, settings):
    from jobs import sessionize
    from model_lib.sources import SynthSpec, write_synth

    per_day = write_synth(
        SynthSpec(users=60, items=40, days=3, malformed_share=0.05, duplicate_share=0.05), settings.raw_events_dir
    )
    stats = sessionize.run(settings, dt.date.fromisoformat(max(per_day)), spark=spark)
    assert stats["read"] == sum(per_day.values())
    assert stats["read"] == stats["valid"] + stats["duplicates"] + stats["quarantined"]
    assert stats["duplicates"] > 0 and set(stats["quarantined_by_reason"]) == {
        "not_json",
        "missing_field",
        "bad_ts",
        "unknown_event_type",
    }
    quarantine = spark.read.parquet(str(settings.quarantine_dir(dt.date.fromisoformat(max(per_day)))))
    assert quarantine.count() == stats["quarantined"]
    sequences = spark.read.parquet(str(settings.sequences_dir(dt.date.fromisoformat(max(per_day)))))
    assert sequences.count() == stats["users"]
    assert {len(r["item_indices"]) for r in sequences.collect()} == {settings.seq_len}
