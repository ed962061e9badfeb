"""Property-based tests of the raw-event parser and validator (hypothesis): whatever bytes a producer writes, the
sessionize transforms never crash, every line Spark reads ends up valid, duplicate or quarantined with a known
reason, and the counts reconcile. Each example is a real raw file read by a real local Spark session."""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from helpers.timestamp_cases import LONG_MAX, MAX_EPOCH_MS, MIN_EPOCH_MS, boundary_values
from jobs import sessionize
from model_lib.config import get_settings
from model_lib.contracts import REASON_CODES
from model_lib.data import raw_events

pytestmark = pytest.mark.spark
DAY = "2024-01-10"
T_DAY = 1_704_844_800_000  # 2024-01-10T00:00:00Z in epoch ms
RULES = dict(event_types=["view", "purchase"], max_line_chars=2_000, max_id_chars=40)

ids = st.one_of(
    st.text(max_size=8),
    st.text(min_size=41, max_size=60),  # longer than max_id_chars
    st.sampled_from(["", " ", "u1", "i1", "\u0000", "\udc80", "ü", "💥"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)
timestamps = st.one_of(
    st.integers(min_value=T_DAY - 10 * 86_400_000, max_value=T_DAY + 2 * 86_400_000),  # around the day
    st.integers(min_value=-(2**63), max_value=2**63 - 1),  # extreme and negative
    st.integers(min_value=2**63, max_value=2**80),  # beyond a long
    st.floats(allow_nan=True, allow_infinity=True),  # json.dumps writes NaN / Infinity tokens
    st.sampled_from(["2024-01-10T12:00:00Z", "2024-01-10T12:00:00+14:00", "0000-00-00", "", "yesterday", "1e400"]),
    st.text(max_size=12),
    # Aimed at the numeric limits of each conversion, not only random text: the long range, the millis -> micros
    # multiplication, years 1 and 9999, and the hand-picked boundary texts (digit counts, offsets, fractions).
    st.sampled_from(boundary_values()),
    st.sampled_from([LONG_MAX, -LONG_MAX - 1, LONG_MAX // 1000, MIN_EPOCH_MS, MAX_EPOCH_MS]).flatmap(
        lambda limit: st.integers(min_value=limit - 3, max_value=limit + 3)
    ),
    st.integers(min_value=1, max_value=25).flatmap(lambda n: st.from_regex(rf"\A-?[0-9]{{{n}}}\Z")),
)
nested = st.recursive(st.integers() | st.text(max_size=4), lambda inner: st.lists(inner, max_size=2), max_leaves=40)
events = st.fixed_dictionaries(
    {"user_id": ids, "item_id": ids, "event_type": st.sampled_from(["view", "purchase", "hover", "", "VIEW"]) | ids},
    optional={"ts": timestamps, "event_id": ids, "value": st.floats() | st.text(max_size=3), "extra": nested},
)


def event_line(event: dict) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


raw_lines = st.one_of(
    events.map(event_line),
    st.binary(max_size=60),  # arbitrary bytes, broken UTF-8 included
    st.integers(min_value=0, max_value=6_000).map(lambda n: event_line({"user_id": "u", "item_id": "x" * n})),
    st.integers(min_value=1, max_value=3_000).map(lambda depth: b"[" * depth + b"]" * depth),  # deep nesting
    st.integers(min_value=1, max_value=600).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.sampled_from([b"", b"{}", b"null", b"[]", b'{"user_id": NaN}', b"\xef\xbb\xbf{}", b"\x00\x00"]),
)


def lines_read(data: bytes) -> int:
    """How many lines Spark's text reader makes of a file: \\n, \\r\\n and \\r end a line."""
    if not data:
        return 0
    return len(re.split(rb"\r\n|\r|\n", data[:-1] if data.endswith((b"\n", b"\r")) else data))


SEED = 20_261_201  # fixed: a failure found once is found again by every run


@seed(SEED)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(raw_lines, min_size=1, max_size=25), duplicate=st.booleans())
def test_any_bytes_end_up_valid_duplicate_or_quarantined_and_the_counts_reconcile(
    spark, tmp_path_factory, lines, duplicate
):
    check_lines(spark, tmp_path_factory, lines, duplicate)


@pytest.mark.slow
def test_thousands_of_generated_lines_through_spark_never_fail_a_day(spark, tmp_path_factory):
    """The dedicated long run of the property above: 50 examples of 40-80 lines (at least 2,000 lines read by
    Spark from real raw files), same fixed seed; then every generated line at once, as one raw day, through the
    whole sessionize job (validation, de-duplication, sequences, quarantine and state written and committed)."""
    lines_checked, every_line = [], []

    @seed(SEED)
    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(lines=st.lists(raw_lines, min_size=40, max_size=80), duplicate=st.booleans())
    def many(lines, duplicate):
        lines_checked.append(check_lines(spark, tmp_path_factory, lines, duplicate))
        every_line.extend(lines)

    many()
    print(f"{len(lines_checked)} examples, {sum(lines_checked):,} lines read by Spark")
    assert sum(lines_checked) >= 2_000

    job_settings = get_settings(
        data_dir=tmp_path_factory.mktemp("job"), min_item_count=1, seq_len=8, max_quarantine_share=1.0, **RULES
    )
    # Valid events between the generated lines, so the stages after validation run over real users too.
    good = [
        event_line({"user_id": f"u{n % 7}", "item_id": f"i{n % 5}", "event_type": "view", "ts": T_DAY + n * 1000})
        for n in range(len(every_line) // 10)
    ]
    data = b"\n".join(every_line + good) + b"\n"
    folder = job_settings.lake.raw_events_day_dir(dt.date.fromisoformat(DAY))
    folder.mkdir(parents=True)
    (folder / "part-00000.jsonl").write_bytes(data)
    stats = sessionize.run(job_settings, dt.date.fromisoformat(DAY), spark=spark)
    print(f"one raw day through the sessionize job: {json.dumps(stats)}")
    assert stats["status"] == "succeeded" and stats["read"] == lines_read(data) >= 2_000
    assert stats["read"] == stats["valid"] + stats["duplicates"] + stats["quarantined"]
    # Every rejected line is readable from the quarantine table by a reader other than Spark, raw text intact.
    quarantined = pq.ParquetDataset(job_settings.lake.quarantine_dir(dt.date.fromisoformat(DAY))).read().to_pandas()
    assert len(quarantined) == stats["quarantined"] and quarantined["raw_line"].notna().all()
    sequences = pq.ParquetDataset(job_settings.lake.sequences_dir(dt.date.fromisoformat(DAY))).read().to_pandas()
    assert stats["valid"] >= len(good) and len(sequences) == stats["users"] >= 7


def check_lines(spark, tmp_path_factory, lines: list[bytes], duplicate: bool) -> int:
    """Writes the lines as one raw file, validates them with Spark, checks the invariants; returns lines read."""
    rules = get_settings(data_dir=tmp_path_factory.mktemp("data"), **RULES)
    if duplicate:  # a re-delivered line must count as a duplicate, not vanish
        lines = lines + [event_line({"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": T_DAY})] * 2
    data = b"\n".join(lines) + b"\n"
    folder = tmp_path_factory.mktemp("raw") / f"dt={DAY}"
    folder.mkdir()
    (folder / "part-0.jsonl").write_bytes(data)

    frame = spark.read.option("basePath", str(folder.parent)).text(str(folder))
    validated = raw_events.validate(
        raw_events.parse_raw_lines(raw_events.located_lines(frame)), raw_events.ValidationRules.of(rules.sessionize)
    )
    validated = validated.cache()
    by_reason = {row["reason"]: row["count"] for row in validated.groupBy("reason").count().collect()}
    valid = raw_events.deduplicate(validated.where(F.col("reason").isNull())).count()
    read = sum(by_reason.values())
    quarantined = sum(n for reason, n in by_reason.items() if reason is not None)
    duplicates = by_reason.get(None, 0) - valid

    assert read == lines_read(data), "Spark read a different number of lines than the file holds"
    assert read == valid + duplicates + quarantined and duplicates >= 0
    assert set(by_reason) - {None} <= set(REASON_CODES)
    # Every quarantined row keeps its raw text for the quarantine table.
    assert raw_events.quarantine_rows(validated).where(F.col("raw_line").isNull()).count() == 0
    if duplicate:
        assert duplicates >= 1
    # A valid event's timestamp lies inside the accepted window: 72 h late at most, 60 min past the day at most.
    window = (dt.datetime(2024, 1, 7), dt.datetime(2024, 1, 11, 1))
    for row in validated.where(F.col("reason").isNull()).select("event_ts").collect():
        assert window[0] <= row["event_ts"] < window[1]
    validated.unpersist()
    return read


def test_scoring_inputs_at_the_edges_give_unseen_items_and_never_fail(tmp_path):
    """Empty history, only unknown items, one event, 10,000 events, K beyond the catalogue."""
    import keras
    import pandas as pd

    from model_lib.model.network import NextItemModel, build_model
    from model_lib.serving.recommender import Recommender
    from model_lib.serving.registry import recommend_from_raw_ids

    rules = get_settings(data_dir=tmp_path)
    keras.utils.set_random_seed(3)
    model = NextItemModel(
        30, rules.sessionize.num_event_types, rules.sessionize.num_gap_buckets, embedding_dim=8, hidden_dim=8
    )
    build_model(model)
    catalogue = [f"i{k}" for k in range(2, 30)]
    vocabulary = pd.DataFrame({"item_index": range(2, 30), "item_id": catalogue, "count": range(1000, 972, -1)})
    recommender = Recommender(model, vocabulary, rules.sessionize.event_types)
    long_history = [f"i{2 + k % 9}" for k in range(10_000)]  # items i2..i10, 10,000 events
    histories = {"empty": [], "unknown only": ["zz", "", "💥" * 300], "one event": ["i5"], "long": long_history}
    frame = pd.DataFrame({"history": list(histories.values())})

    for k in (5, 500):
        out = recommend_from_raw_ids(recommender, frame, rules.sessionize.seq_len, k).set_index(
            pd.Index(list(histories))
        )
        for name, history in histories.items():
            items = out.loc[name, "item_ids"]
            unseen = [item for item in catalogue if item not in set(history)]
            assert len(items) == len(set(items)) == min(k, len(unseen)), (name, k)
            assert set(items) <= set(unseen) and all(math.isfinite(score) for score in out.loc[name, "scores"])
        # No known item: the popular fallback, most popular first; a known item explains the list.
        assert out.loc["empty", "source"] == out.loc["unknown only", "source"] == "popular"
        assert out.loc["empty", "item_ids"][:3] == ["i2", "i3", "i4"]
        assert set(out.loc["one event", "reason_item_ids"]) == {"i5"} and out.loc["long", "source"] == "model"
