"""jobs/sessionize.py end to end on small synthetic logs: reconciled counts, the run-stats table, the quarantine
threshold, and incremental nightly runs that agree exactly with a full rebuild."""

import datetime as dt
import gzip
import json
import re
import shutil

import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs import sessionize
from model_lib.config import get_settings
from model_lib.contracts import REASON_CODES, SEQUENCE_COLUMNS
from model_lib.data import state
from model_lib.data.sources import SynthSpec, write_synth
from model_lib.storage.spark import size_shuffles

pytestmark = pytest.mark.spark
HASH_AGGREGATE_KEYS = "spark.sql.objectHashAggregate.sortBased.fallbackThreshold"
SPEC = SynthSpec(users=40, items=30, days=4, malformed_share=0.03, duplicate_share=0.05, late_share=0.1)


def sequences(settings, ds):
    frame = pd.read_parquet(settings.lake.sequences_dir(ds)).sort_values("user_id").reset_index(drop=True)
    return frame.map(lambda v: v.tolist() if hasattr(v, "tolist") else v)


@pytest.fixture
def raw_days(settings):
    per_day = write_synth(SPEC, settings.lake.raw_events_dir)
    return [dt.date.fromisoformat(day) for day in sorted(per_day)], per_day


def test_counts_reconcile_and_land_in_the_run_stats_table(spark, settings, raw_days):
    days, per_day = raw_days
    # A copy of a day under a name that is no YYYY-MM-DD (Python's fromisoformat takes it) is no day: ignored by
    # every reader, and named in the run's stats.
    misnamed = settings.lake.raw_events_dir / f"dt={days[0]:%Y%m%d}"
    shutil.copytree(settings.lake.raw_events_day_dir(days[0]), misnamed)
    stats = sessionize.run(settings, days[-1], spark=spark)
    assert stats["ignored_folders"] == misnamed.name
    assert stats["mode"] == "full" and stats["read"] == sum(per_day.values())
    assert stats["read"] == stats["valid"] + stats["duplicates"] + stats["quarantined"]
    # Every line-level reason (the synthetic files are all readable: unreadable files have their own test).
    assert stats["duplicates"] > 0 and set(stats["quarantined_by_reason"]) == set(REASON_CODES) - {"unreadable_file"}
    quarantine = spark.read.parquet(str(settings.lake.quarantine_root))
    assert quarantine.count() == stats["quarantined"]
    assert {r["dt"].isoformat() for r in quarantine.select("dt").distinct().collect()} <= set(per_day)
    # A rejected line keeps its file's path; a stored event its file's name (events.arrival).
    assert quarantine.where(~F.col("source_file").contains("/dt=")).count() == 0
    stored = spark.read.parquet(str(settings.lake.state_dir(days[-1]) / "users"))
    files = {r["file"] for r in stored.select(F.explode("events.arrival.file").alias("file")).distinct().collect()}
    assert files and not any("/" in name for name in files)
    table = pd.read_parquet(settings.lake.run_stats_root("sessionize"))
    assert table["read"].tolist() == [stats["read"]] and table["status"].tolist() == ["succeeded"]
    assert table["ignored_folders"].tolist() == [misnamed.name]
    assert table[[f"quarantined_{c}" for c in REASON_CODES]].sum(axis=1).tolist() == [stats["quarantined"]]
    frame = sequences(settings, days[-1])
    assert len(frame) == stats["users"] and {len(items) for items in frame["item_indices"]} == {
        settings.sessionize.seq_len
    }
    assert list(frame.columns) == SEQUENCE_COLUMNS  # the order docs/your-data.md documents (test_contracts.py)


def current_state(spark, settings, ds) -> pd.DataFrame:
    from model_lib.data.events import newest_state_rows

    users = newest_state_rows(spark.read.parquet(str(settings.lake.state_dir(ds) / "users")))
    frame = users.select("user_id", "older_items", "older_items_dropped").toPandas()
    frame["older_items"] = frame["older_items"].map(lambda items: [(row["item_id"], row["last_ts"]) for row in items])
    return frame.sort_values("user_id").reset_index(drop=True)


def test_one_user_costs_the_state_at_most_the_older_items_cap_and_nights_still_equal_a_rebuild(spark, tmp_path):
    """Every distinct item a user ever touched stayed in the state (a bot with a million ids grew one row past what an
    executor holds, every night). Capped at max_older_items, most recent first; a day above max_user_day_events
    names its users."""
    capped = get_settings(
        data_dir=tmp_path / "data",
        min_item_count=1,
        seq_len=4,
        history_len=0,
        max_older_items=3,
        max_user_day_events=60,
    )
    per_day = write_synth(SynthSpec(users=12, items=40, days=4), capped.lake.raw_events_dir)
    days = [dt.date.fromisoformat(day) for day in sorted(per_day)]
    bot_day = capped.lake.raw_events_day_dir(days[-1])
    bot = [
        json.dumps(
            {"user_id": "bot", "item_id": f"b{n}", "event_type": "view", "ts": f"{days[-1]}T0{n % 10}:00:{n % 60:02d}Z"}
        )
        for n in range(300)
    ]
    (bot_day / "part-bot.jsonl").write_text("\n".join(bot) + "\n")
    for day in days:
        stats = sessionize.run(capped, day, spark=spark)
    assert stats["mode"] == "incremental" and stats["users_over_day_events"] == "bot"
    nights = current_state(spark, capped, days[-1])
    nightly_sequences = sequences(capped, days[-1])
    assert nights["older_items"].map(len).max() == 3 and nights["older_items_dropped"].max() >= 300 - 4 - 1 - 3
    kept = nights.set_index("user_id").loc["bot", "older_items"]
    assert [item for item, _ in kept] == sorted(
        [f"b{n}" for n in range(300)], key=lambda item: (-(int(item[1:]) % 10) * 3600 - int(item[1:]) % 60, item)
    )[5:8]  # the newest after the 5 stored events (L + 1), ties by id

    rebuilt = sessionize.run(capped, days[-1], spark=spark, mode="full")
    assert rebuilt["mode"] == "full"
    pd.testing.assert_frame_equal(nightly_sequences, sequences(capped, days[-1]))
    full = current_state(spark, capped, days[-1])
    pd.testing.assert_frame_equal(nights[["user_id", "older_items"]], full[["user_id", "older_items"]])
    assert (nights["older_items_dropped"] >= full["older_items_dropped"]).all()


def test_shuffles_are_sized_to_the_rows_read(spark, settings):
    engines = settings.engines.model_copy(
        update={"spark_rows_per_shuffle_partition": 10, "spark_shuffle_partitions": 5}
    )
    cores = spark.sparkContext.defaultParallelism
    try:
        assert size_shuffles(spark, engines, 0) == cores  # never fewer partitions than cores
        assert size_shuffles(spark, engines, 31) == max(cores, 4)
        assert size_shuffles(spark, engines, 10_000) == 5  # never more than configured
        assert spark.conf.get("spark.sql.shuffle.partitions") == "5"
    finally:
        size_shuffles(spark, settings.engines, 0)
    assert spark.conf.get(HASH_AGGREGATE_KEYS) == str(settings.engines.spark_hash_aggregate_keys)
    assert spark.conf.get("spark.sql.inMemoryColumnarStorage.compressed") == "false"  # RECO_SPARK_COMPRESS_CACHE


def state_layers(settings, ds) -> dict:
    return json.loads((settings.lake.sessionized_dir(ds) / state.MANIFEST).read_text())["rows"]["state_layers"]


def test_incremental_nights_equal_a_full_rebuild(spark, settings, raw_days):
    days, _ = raw_days
    first = sessionize.run(settings, days[0], spark=spark)
    assert first["mode"] == "full" and list(state_layers(settings, days[0])) == [days[0].isoformat()]
    layers, touched_only = [], []
    for day in days[1:]:
        nightly = sessionize.run(settings, day, spark=spark)
        assert nightly["mode"] == "incremental" and nightly["days_read"] == 1
        assert nightly["read"] == nightly["valid"] + nightly["duplicates"] + nightly["quarantined"]
        layers.append(state_layers(settings, day))
        assert max(layers[-1]) == day.isoformat()  # each night writes a layer of its own
        touched_only.append(layers[-1][day.isoformat()] < nightly["users"])
    # The nights both stacked layers (only the touched users written) and compacted them (more rows than twice the
    # users), and the last night still equals a rebuild: the newest row of each user was the one merged.
    print(f"state layers per night: {layers}")
    assert any(len(night) > 1 for night in layers) and any(len(night) == 1 for night in layers)
    assert any(touched_only)  # a layer of the touched users only
    incremental = sequences(settings, days[-1])
    incremental_vocabulary = pd.read_parquet(settings.lake.vocab_dir(days[-1]))
    # The rebuild runs on more shuffle partitions and aggregates each user's events by sorting (Spark's fallback
    # after a task's first key), the nights on one partition per core in a hash map: neither may change a row.
    spread = get_settings(
        data_dir=settings.lake.data_dir,
        min_item_count=1,
        seq_len=settings.sessionize.seq_len,
        history_len=0,
        spark_rows_per_shuffle_partition=1,
        spark_shuffle_partitions=5,
    )
    spark.conf.set(HASH_AGGREGATE_KEYS, "1")
    try:
        rebuilt = sessionize.run(spread, days[-1], spark=spark, mode="full")
    finally:
        spark.conf.set(HASH_AGGREGATE_KEYS, str(settings.engines.spark_hash_aggregate_keys))
    assert rebuilt["mode"] == "full" and rebuilt["days_read"] == len(days)
    assert spark.conf.get("spark.sql.shuffle.partitions") == "5"
    pd.testing.assert_frame_equal(incremental, sequences(settings, days[-1]))
    pd.testing.assert_frame_equal(incremental_vocabulary, pd.read_parquet(settings.lake.vocab_dir(days[-1])))
    assert incremental["older_item_indices"].map(len).sum() > 0  # windows overflowed, so the state was exercised
    # A re-run of the same night replaces its outputs and gives the same sequences again, here folding the layers
    # into one on request.
    sessionize.run(settings, days[-1], spark=spark, mode="incremental", compact=True)
    pd.testing.assert_frame_equal(incremental, sequences(settings, days[-1]))
    assert list(state_layers(settings, days[-1])) == [days[-1].isoformat()]
    # A quiet day: the producer committed an empty partition; every user's sequence carries over unchanged.
    quiet_day = days[-1] + dt.timedelta(days=1)
    settings.lake.raw_events_day_dir(quiet_day).mkdir()
    quiet = sessionize.run(settings, quiet_day, spark=spark)
    assert (quiet["status"], quiet["mode"], quiet["read"]) == ("succeeded", "incremental", 0)
    pd.testing.assert_frame_equal(incremental, sequences(settings, quiet_day))
    # A different L cannot continue yesterday's state: auto mode rebuilds.
    longer = get_settings(
        data_dir=settings.lake.data_dir, min_item_count=1, seq_len=settings.sessionize.seq_len + 2, history_len=0
    )
    with pytest.raises(RuntimeError, match="other seq_len"):
        sessionize.run(longer, days[-1], spark=spark, mode="incremental")
    changed = sessionize.run(longer, days[-1], spark=spark)
    assert (
        changed["mode"] == "full"
        and len(sequences(longer, days[-1])["item_indices"][0]) == settings.sessionize.seq_len + 2
    )


def test_too_much_quarantine_fails_the_run_after_writing_it(spark, settings):
    day = dt.date(2024, 3, 1)
    folder = settings.lake.raw_events_day_dir(day)
    folder.mkdir(parents=True)
    good = [f'{{"user_id":"u{i}","item_id":"i1","event_type":"view","ts":"{day}T10:00:0{i}Z"}}' for i in range(9)]
    with gzip.open(folder / "part-00000.jsonl.gz", "wt") as handle:
        handle.write("\n".join([*good, "{truncated"]) + "\n")
    with pytest.raises(ValueError, match=r"1 of 10 lines \(10.0%\) were quarantined"):
        sessionize.run(settings, day, spark=spark)
    assert pd.read_parquet(settings.lake.quarantine_dir(day))["reason"].tolist() == ["not_json"]
    assert pd.read_parquet(settings.lake.run_stats_dir("sessionize", day))["status"].tolist() == ["failed"]
    assert not settings.lake.sequences_dir(day).exists() and not settings.lake.state_dir(day).exists()
    relaxed = get_settings(
        data_dir=settings.lake.data_dir, min_item_count=1, seq_len=8, history_len=0, max_quarantine_share=0.2
    )
    assert sessionize.run(relaxed, day, spark=spark)["users"] == 9


def test_an_unreadable_file_is_quarantined_as_one_row_and_the_days_other_files_are_read(spark, settings):
    """A truncated .gz and a file named .gz that is not gzip failed Spark's read of the whole day (FAILED_READ_FILE),
    every retry and every later rebuild. Each is now one quarantined row naming the file, in a full rebuild and in
    an incremental night; an empty .gz is no fault."""

    def write_day(day, users):
        folder = settings.lake.raw_events_day_dir(day)
        folder.mkdir(parents=True)
        event = '{{"user_id":"u{}","item_id":"i{}","event_type":"view","ts":"{}T10:{:02d}:{:02d}Z"}}'
        good = [event.format(i % users, i % 7, day, i // 60, i % 60) for i in range(240)]
        (folder / "part-00000.jsonl").write_text("\n".join(good) + "\n")
        whole = gzip.compress(("\n".join(good) + "\n").encode())
        (folder / "part-00001.jsonl.gz").write_bytes(whole[: len(whole) // 2])
        (folder / "part-00002.jsonl.gz").write_text("\n".join(good[:3]) + "\n")
        (folder / "part-00003.jsonl.gz").write_bytes(b"")

    relaxed = get_settings(data_dir=settings.lake.data_dir, min_item_count=1, seq_len=8, history_len=0)
    first, second = dt.date(2024, 3, 2), dt.date(2024, 3, 3)
    write_day(first, 24)
    write_day(second, 30)
    for day, mode, users in ((first, "full", 24), (second, "incremental", 30)):
        stats = sessionize.run(relaxed, day, spark=spark, mode=mode)
        assert stats["status"] == "succeeded" and stats["valid"] == 240 and stats["users"] == users
        assert stats["quarantined_by_reason"] == {"unreadable_file": 2} and stats["read"] == 242
        quarantine = pd.read_parquet(settings.lake.quarantine_dir(day)).sort_values("source_file")
        assert [path.rsplit("/", 1)[-1] for path in quarantine["source_file"]] == [
            "part-00001.jsonl.gz",
            "part-00002.jsonl.gz",
        ]
        assert quarantine["raw_line"].str.contains("EOFError|BadGzipFile").all()


def test_no_timestamp_at_any_limit_fails_the_day(spark, settings):
    """Every boundary `ts` (tests/helpers/timestamp_cases.py), as text and as a JSON number, in one raw day beside valid
    events: the real job succeeds, the unparseable ones are quarantined as bad_ts, and the counts reconcile."""
    import json

    from helpers.timestamp_cases import boundary_values, expected_micros

    day = dt.date(2024, 1, 10)
    texts = [text for text in boundary_values() if text.strip(" ")]
    poison = [{"ts": text} for text in texts] + [
        {"ts": int(text)} for text in texts if re.fullmatch(r"-?(0|[1-9][0-9]*)", text)
    ]
    good = [{"ts": f"{day}T10:00:{second:02d}Z"} for second in range(60)]
    lines = [
        json.dumps({"user_id": f"u{n % 7}", "item_id": f"i{n % 5}", "event_type": "view", **event})
        for n, event in enumerate(poison + good)
    ]
    folder = settings.lake.raw_events_day_dir(day)
    folder.mkdir(parents=True)
    (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")
    relaxed = get_settings(
        data_dir=settings.lake.data_dir, min_item_count=1, seq_len=8, history_len=0, max_quarantine_share=1.0
    )

    stats = sessionize.run(relaxed, day, spark=spark)

    unparseable = sum(expected_micros(str(event["ts"])) is None for event in poison)
    assert stats["status"] == "succeeded" and stats["read"] == len(lines)
    assert stats["read"] == stats["valid"] + stats["duplicates"] + stats["quarantined"]
    assert stats["quarantined_by_reason"]["bad_ts"] == unparseable > 250
    assert stats["valid"] >= len(good) and stats["users"] == 7


@pytest.mark.parametrize("changed", [{"max_gap_bucket": 12}, {"session_gap_minutes": 45}, {"seq_len": 9}])
def test_a_setting_that_changes_an_encoding_forces_a_full_rebuild(settings, changed):
    """Carried-over users keep yesterday's encoded gap buckets and sessions, so continuing a state built with other
    encodings would mix two encodings in one day's sequences."""
    yesterday, today = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    write_manifest(settings.lake.sessionized_dir(yesterday), state.state_shape(settings.sessionize))
    assert state.plan_run(settings, today, "auto").mode == "incremental"
    other = get_settings(
        **{"data_dir": settings.lake.data_dir, "min_item_count": 1, "seq_len": 8, "history_len": 0, **changed}
    )
    plan = state.plan_run(other, today, "auto")
    assert plan.mode == "full" and next(iter(changed)) in plan.why
    with pytest.raises(RuntimeError, match=f"other {next(iter(changed))}"):
        state.plan_run(other, today, "incremental")


def test_a_state_judged_by_older_validation_rules_is_rebuilt_in_full(settings):
    """A state from before a rule was added (here bad_encoding and bad_id) holds events the new rule rejects."""
    yesterday, today = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    older_rules = [code for code in REASON_CODES if code not in ("bad_encoding", "bad_id")]
    older_shape = {**state.state_shape(settings.sessionize), "reason_codes": older_rules}
    write_manifest(settings.lake.sessionized_dir(yesterday), older_shape)
    plan = state.plan_run(settings, today, "auto")
    assert plan.mode == "full" and "reason_codes" in plan.why


def test_a_state_stored_before_layers_is_rebuilt_in_full(settings):
    """Before layers every night rewrote every user's row (with its sequence columns) in one folder: such a state
    has no `layer` partitions to take each user's newest row from."""
    yesterday, today = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    unlayered = {key: value for key, value in state.state_shape(settings.sessionize).items() if key != "state_layout"}
    write_manifest(settings.lake.sessionized_dir(yesterday), unlayered)
    plan = state.plan_run(settings, today, "auto")
    assert plan.mode == "full" and "state_layout" in plan.why


def write_manifest(day, shape: dict) -> None:
    day.mkdir(parents=True)
    rows = {"users": 0, "state_layers": {}}
    (day / state.MANIFEST).write_text(json.dumps({"shape": shape, "rows": rows, "schemas": {}}))
