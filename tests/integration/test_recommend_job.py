"""jobs/recommend.py on a real local Spark with a model from a real MLflow store: every user with history gets
their unseen items (K up to beyond the catalogue), cold users the most popular ones, the pinned version on every
row, and the same inputs give the same files, byte for byte."""

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.sequence_files import register_tiny_model
from model_lib.config import SessionizedDay, get_settings
from model_lib.data.sequence_files import write_sequences
from model_lib.data.splits import Sequences
from model_lib.storage.lake import read_run_stats
from model_lib.storage.warehouse import open_warehouse

pytestmark = pytest.mark.spark
DS = dt.date(2024, 3, 1)
NEW_ITEM = 30  # in the day's vocabulary, unknown to the model


def file_digests(folder) -> list[str]:
    return sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.glob("*.parquet"))


def random_users(users: int, seed: int, steps: int = 8) -> Sequences:
    items = np.random.default_rng(seed).integers(2, 30, size=(users, steps)).astype(np.int32)
    ids = np.array([f"u{u:03d}" for u in range(users)], dtype=object)
    return Sequences(ids, items, np.ones_like(items), np.full_like(items, 3), [np.zeros(0, np.int64)] * users)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, spark):
    """One tiny model with user segments in a real MLflow store, shared by the module's days -> (settings, version,
    vocabulary)."""
    settings = get_settings(data_dir=tmp_path_factory.mktemp("recommend") / "data", seq_len=8)
    return settings, *register_tiny_model(settings, spark=spark, segment_users=random_users(50, seed=8))


def test_batch_scoring(spark, registered):
    from jobs import recommend

    settings, version, vocabulary = registered
    day_vocabulary = pd.concat(
        [vocabulary, pd.DataFrame({"item_index": [NEW_ITEM], "item_id": ["new"], "count": [5]})], ignore_index=True
    )
    settings.lake.vocab_dir(DS).mkdir(parents=True)
    day_vocabulary.to_parquet(settings.lake.vocab_dir(DS) / "part-0.parquet", index=False)
    rng = np.random.default_rng(3)
    users = 60
    items = rng.integers(2, NEW_ITEM + 1, size=(users, 8)).astype(np.int32)
    items[:, :3] = 0  # left padding
    items[1] = [0, 0, 0, 0, 0, 0, NEW_ITEM, NEW_ITEM]  # only an item the model does not know
    items[2] = 0  # no history at all: not scored
    older = [np.array([2, 3], np.int64) if u == 0 else np.zeros(0, np.int64) for u in range(users)]
    sequences = Sequences(
        np.array([f"u{u:03d}" for u in range(users)], dtype=object),
        items,
        np.where(items > 0, 1, 0).astype(np.int32),
        np.where(items > 0, 3, 0).astype(np.int32),
        older,
    )
    write_sequences(sequences, settings.lake.sequences_dir(DS), files=3)

    first = recommend.run(settings, DS, version=version, k=500)
    digests = file_digests(settings.lake.recommendations_dir(DS))
    second = recommend.run(settings, DS, version=version, k=500)
    assert file_digests(settings.lake.recommendations_dir(DS)) == digests
    assert {**first, "seconds": None} == {**second, "seconds": None} and first["k"] == 500
    # The run's counts are also kept for the DAG's run summary.
    assert read_run_stats(settings.lake.run_stats_dir("recommend", DS))["rows"] == second["rows"]

    rows = pd.read_parquet(settings.lake.recommendations_dir(DS))
    model_items = set(vocabulary["item_id"])
    assert set(rows["user_id"]) == {f"u{u:03d}" for u in range(users)} - {"u002"}
    assert set(rows["model_version"]) == {version}
    for user, got in rows.groupby("user_id"):
        row = int(user[1:])
        seen = {f"i{i}" for i in np.concatenate([items[row], older[row]]) if 2 <= i < NEW_ITEM}
        assert got["rank"].tolist() == list(range(1, len(got) + 1))
        assert set(got["item_id"]) == model_items - seen, user  # every unseen item the model knows, once
        assert got["score"].is_monotonic_decreasing
    cold = rows[rows["user_id"] == "u001"]
    assert set(cold["source"]) == {"popular"} and cold["reason_item_id"].isna().all()
    assert cold["item_id"].head(3).tolist() == ["i2", "i3", "i4"]
    warm = rows[rows["user_id"] != "u001"]
    assert set(warm["source"]) == {"model"} and warm["reason_item_id"].notna().all()

    # A model window shorter than the stored history: the cut events' items still count as seen.
    recommend.run(settings.updated(seq_len=5), DS, version=version, k=500)
    windowed = pd.read_parquet(settings.lake.recommendations_dir(DS))
    for user, got in windowed.groupby("user_id"):
        row = int(user[1:])
        seen = {f"i{i}" for i in np.concatenate([items[row], older[row]]) if 2 <= i < NEW_ITEM}
        assert not seen & set(got["item_id"]), user

    # allow_repeats: seen items come back, each marked as a repeat.
    summary = recommend.run(settings.updated(repeat_policy="allow_repeats"), DS, version, k=500)
    repeats = pd.read_parquet(settings.lake.recommendations_dir(DS))
    assert (
        summary["repeat_policy"] == "allow_repeats" and summary["repeat_rows"] == (repeats["source"] == "repeat").sum()
    )
    for user, got in repeats[repeats["user_id"] != "u001"].groupby("user_id"):
        row = int(user[1:])
        seen = {f"i{i}" for i in np.concatenate([items[row], older[row]]) if 2 <= i < NEW_ITEM}
        assert set(got["item_id"]) == model_items, user  # every item the model knows, seen or not
        assert set(got.loc[got["source"] == "repeat", "item_id"]) == seen, user


def test_a_model_that_does_not_fit_the_day_is_refused_before_anything_is_written(registered):
    """A champion trained on another catalogue (or other event types) would hand everybody the popular fallback
    under its own name; the job refuses it instead, before Spark starts."""
    from jobs import recommend
    from model_lib.serving.recommender import IncompatibleModelError

    settings, version, vocabulary = registered
    day = DS + dt.timedelta(days=1)
    # The same indices, but other items: 9 of the day's 28 equally frequent items are ones the model knows.
    foreign = vocabulary.assign(item_id=[f"x{i}" for i in vocabulary["item_index"]], count=7)
    day_vocabulary = pd.concat([foreign.iloc[:19], vocabulary.iloc[19:].assign(count=7)], ignore_index=True)
    settings.lake.vocab_dir(day).mkdir(parents=True)
    day_vocabulary.to_parquet(settings.lake.vocab_dir(day) / "part-0.parquet", index=False)
    settings.lake.day_item_counts_dir(day).mkdir(parents=True)
    day_events = settings.lake.day_item_counts_dir(day) / "part-0.parquet"
    day_vocabulary[["item_id", "count"]].to_parquet(day_events, index=False)

    with pytest.raises(IncompatibleModelError, match=r"knows 32\.1% of the day's events, below .* 50%") as refused:
        recommend.run(settings, day, version=version)
    assert "nothing was written" in str(refused.value)
    assert not settings.lake.recommendations_dir(day).exists()
    assert read_run_stats(settings.lake.run_stats_dir("recommend", day)) is None

    # The catalogue fits, but the model reads event types in another order.
    fitting = day_vocabulary.assign(item_id=vocabulary["item_id"])
    fitting.to_parquet(settings.lake.vocab_dir(day) / "part-0.parquet")
    fitting[["item_id", "count"]].to_parquet(day_events, index=False)
    reordered = get_settings(
        data_dir=settings.lake.data_dir, seq_len=8, event_types=list(reversed(settings.sessionize.event_types))
    )
    with pytest.raises(IncompatibleModelError, match="trained on event types") as refused:
        recommend.run(reordered, day, version=version)
    assert "knows" not in str(refused.value)
    assert not settings.lake.recommendations_dir(day).exists()

    with pytest.raises(LookupError, match=f"has no version {version + 1} in the registry"):
        recommend.run(settings, day, version=version + 1)

    # The check weighs the day's own events, not all history: the vocabulary (all-time counts) is the model's own,
    # but 80% of today's events fall on items that arrived since training.
    vocabulary.to_parquet(settings.lake.vocab_dir(day) / "part-0.parquet", index=False)
    today = pd.DataFrame({"item_id": ["i2", "new-1", "new-2"], "count": [20, 40, 40]})
    today.to_parquet(day_events, index=False)
    with pytest.raises(IncompatibleModelError, match=r"knows 20\.0% of the day's events"):
        recommend.run(settings, day, version=version)
    # A day that brought no events is weighed by every event so far, and says so.
    today.assign(count=0).to_parquet(day_events, index=False)
    assert recommend.extract_day_events(SessionizedDay(settings.lake.sessionized_dir(day)), vocabulary)[1].startswith(
        "the events so far"
    )


class _PickleThatRunsCode:
    """Stands for a malicious pyfunc: unpickling it runs `code` (here: creates a marker file)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def test_the_pipeline_never_unpickles_a_registered_model(spark, registered, tmp_path):
    """A version whose pickle runs code when loaded: the nightly Spark workers, the promotion gate and the registry
    loader all score it from its plain files, and the code never runs. As a control, MLflow's pyfunc loader runs it."""
    import mlflow
    from mlflow.pyfunc import PythonModel

    from jobs import promote, recommend
    from model_lib.serving import registry

    settings, version, vocabulary = registered
    marker = tmp_path / "pickle-ran"

    class Malicious(PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

        def __reduce__(self):
            return _PickleThatRunsCode(f"import pathlib; pathlib.Path({str(marker)!r}).touch()").__reduce__()

    honest = registry.load_recommender(settings, version)
    client = registry.configure(settings)
    with mlflow.start_run(run_name="malicious"):
        folder = honest.save(tmp_path / "files" / registry.RECOMMENDER_ARTIFACT)
        info = mlflow.pyfunc.log_model(name="model", python_model=Malicious(), artifacts={"recommender": str(folder)})
    malicious = registry.register(client, info.model_uri, settings, tags={"purpose": "test"})
    # MLflow's log_model loads the pickle back to validate it: the code ran in the registering process (the
    # attacker's own); from here on no process of the pipeline may run it.
    assert marker.exists()
    marker.unlink()

    day = DS + dt.timedelta(days=5)
    settings.lake.vocab_dir(day).mkdir(parents=True)
    vocabulary.to_parquet(settings.lake.vocab_dir(day) / "part-0.parquet", index=False)
    rng = np.random.default_rng(5)
    items = rng.integers(2, 30, size=(40, 8)).astype(np.int32)
    sequences = Sequences(
        np.array([f"u{u:03d}" for u in range(40)], dtype=object),
        items,
        np.ones_like(items),
        np.full_like(items, 3),
        [np.zeros(0, np.int64)] * 40,
    )
    write_sequences(sequences, settings.lake.sequences_dir(day), files=2)

    scored = recommend.run(settings, day, version=malicious, k=5)  # Spark Python workers load the version
    gated = promote.gate(settings, day, challenger=malicious, auto_promote=False)  # the gate loads it too
    loaded = registry.load_recommender(settings, malicious)
    assert scored["users"] == 40 and scored["rows"] == 200
    assert gated["challenger"] == malicious and "challenger_ndcg_10" in gated  # scored on the hold-out
    assert np.array_equal(loaded.scorer.item_matrix, honest.scorer.item_matrix)
    assert not marker.exists(), "the pipeline unpickled registry content"

    with pytest.raises(Exception):  # noqa: B017 - the control: MLflow's own loader runs the pickle's code
        mlflow.pyfunc.load_model(f"models:/{settings.model.model_name}/{malicious}")
    assert marker.exists()


def test_files_changed_after_registration_are_refused(registered, tmp_path):
    """The checksum recorded at registration is checked on every load."""
    import mlflow

    from model_lib.serving import registry
    from model_lib.serving.recommender import IncompatibleModelError

    settings, version, _ = registered
    client = registry.configure(settings)
    model_id = client.get_model_version(settings.model.model_name, str(version)).source.removeprefix("models:/")
    location = mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://")
    stored = Path(location) / "artifacts" / "recommender" / "model.weights.h5"
    original = stored.read_bytes()
    try:
        stored.write_bytes(original[:-8] + b"tampered")
        with pytest.raises(IncompatibleModelError, match="do not match the checksum recorded"):
            registry.load_recommender(settings, version)
    finally:
        stored.write_bytes(original)
    assert registry.load_recommender(settings, version).num_items == 30


def test_every_nightly_table_comes_from_the_same_pass_and_is_published_with_the_day(spark, warehouse_url, tmp_path):
    """A champion with the event-type head and user segments: every scored user gets one row per configured event
    type, summing to one, a profile in the model's segments, and users with events that day an anomaly score, all
    from the version that wrote the recommendations; publishing puts every table in the warehouse at once, a re-run
    replaces them, and a run with the extra tables switched off leaves them without rows for the day."""
    from jobs import publish, recommend
    from model_lib.serving import registry

    settings = get_settings(data_dir=tmp_path / "data", seq_len=8, warehouse_url=warehouse_url)
    trained_on = random_users(60, seed=4)
    version, vocabulary = register_tiny_model(settings, event_type_head=True, spark=spark, segment_users=trained_on)
    vocabulary.to_parquet(mkdir(settings.lake.vocab_dir(DS)) / "part-0.parquet", index=False)
    rng = np.random.default_rng(5)
    items = rng.integers(2, 30, size=(40, 8)).astype(np.int32)
    types = rng.integers(1, len(settings.sessionize.event_types) + 1, size=items.shape).astype(np.int32)
    users = np.array([f"u{u:03d}" for u in range(40)], dtype=object)
    # Hourly events; the last two of the first 30 users fall on DS, the other ten users' all on earlier days.
    start = int(dt.datetime.combine(DS, dt.time(), dt.UTC).timestamp())
    times = start - 3600 * np.arange(6, -2, -1)[None, :].repeat(40, axis=0) + 1800
    times[30:] -= 3 * 86_400
    write_sequences(
        Sequences(users, items, types, np.full_like(items, 3), [np.zeros(0, np.int64)] * 40, times),
        settings.lake.sequences_dir(DS),
        files=2,
    )
    summary = recommend.run(settings, DS, version=version, k=5)
    behaviour = pd.read_parquet(settings.lake.nightly_table_dir("user_next_behaviour", DS))
    assert summary["next_behaviour_rows"] == len(behaviour) == 40 * len(settings.sessionize.event_types)
    assert set(behaviour["event_type"]) == set(settings.sessionize.event_types)
    np.testing.assert_allclose(behaviour.groupby("user_id")["probability"].sum(), 1.0, rtol=1e-5)
    assert set(behaviour["model_version"]) == {version}

    # Anomalies: the users with events that day ranked by how unlikely the model found them; the top 1% published.
    anomalous = pd.read_parquet(settings.lake.nightly_table_dir("user_anomalies", DS))
    assert summary["anomalous_users"] == len(anomalous) == 1 and anomalous["percentile"].tolist() == [1.0]
    assert anomalous["user_id"].iloc[0] in users[:30] and anomalous["events"].tolist() == [2]
    row = int(anomalous["user_id"].iloc[0][1:])
    assert anomalous["most_surprising_item_id"].iloc[0] in {f"i{i}" for i in items[row, -2:]}

    # User profiles: every scored user in the nearest of the model's segments (fitted when it was registered), with
    # the model's vector; each segment with users that day described as the model describes it.
    profiles = pd.read_parquet(settings.lake.nightly_table_dir("user_profiles", DS))
    segments = pd.read_parquet(settings.lake.nightly_table_dir("user_segments", DS))
    model_segments = registry.trained_on(settings, version).segments
    assert len(profiles) == 40 and profiles["embedding"].map(len).eq(8).all()
    nearest, _ = model_segments.assign(np.stack(profiles["embedding"]))
    assert profiles["segment"].tolist() == nearest.tolist()
    assert set(profiles["segment"]) == set(segments["segment"]) and len(segments) <= settings.serving.profile_segments
    assert segments["users"].sum() == 40 and segments["description"].str.len().gt(0).all()
    described = {entry["segment"]: entry["description"] for entry in model_segments.described}
    assert all(described[row.segment] == row.description for row in segments.itertuples())

    for run_id in ("first", "again"):
        published = publish.run(settings, DS, run_id)
    assert published["tables"] == {
        "recommendations": 200,
        "user_next_behaviour": len(behaviour),
        "user_profiles": 40,
        "user_segments": len(segments),
        "user_anomalies": 1,
    }
    warehouse = open_warehouse(warehouse_url)
    warehouse_rows = warehouse.query(
        "SELECT count(*) AS n, count(DISTINCT user_id) AS users, min(model_version) AS v FROM user_next_behaviour"
    )
    assert warehouse_rows.iloc[0].tolist() == [len(behaviour), 40, version]
    # Arrays survive both bulk loads: the vectors exactly, the segments' item lists in order.
    stored = warehouse.query("SELECT user_id, embedding FROM user_profiles ORDER BY user_id")
    np.testing.assert_allclose(np.stack(stored["embedding"]), np.stack(profiles.sort_values("user_id")["embedding"]))
    lists = warehouse.query("SELECT segment, top_item_ids FROM user_segments ORDER BY segment")
    assert [list(v) for v in lists["top_item_ids"]] == [
        list(v) for v in segments.sort_values("segment")["top_item_ids"]
    ]

    # Top-K alone (RECO_NIGHTLY_EXTRAS=[]): the day's other tables go, in the lake and, once published, in the
    # warehouse; nothing of the earlier run stays beside the new recommendations.
    alone = recommend.run(settings.updated(nightly_extras=[]), DS, version=version, k=5)
    assert alone["rows"] == 200 and alone["next_behaviour_rows"] == alone["anomalous_users"] == 0
    assert [table for table in EXTRA_TABLES if settings.lake.nightly_table_dir(table, DS).exists()] == []
    assert publish.run(settings, DS, "alone")["tables"]["recommendations"] == 200
    for table in EXTRA_TABLES:
        assert warehouse.query(f"SELECT count(*) AS n FROM {table}")["n"].iloc[0] == 0, table


EXTRA_TABLES = ("user_next_behaviour", "user_profiles", "user_segments", "user_anomalies")


def mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_day_without_any_history_writes_empty_profile_tables_not_an_older_days(registered):
    from jobs import recommend

    settings, version, vocabulary = registered
    day = DS + dt.timedelta(days=7)
    vocabulary.to_parquet(mkdir(settings.lake.vocab_dir(day)) / "part-0.parquet", index=False)
    stale = mkdir(settings.lake.nightly_table_dir("user_profiles", day))
    pd.DataFrame({"user_id": ["someone"]}).to_parquet(stale / "old.parquet")
    empty = np.zeros((3, 8), np.int32)
    users = np.array(["u1", "u2", "u3"], dtype=object)
    write_sequences(
        Sequences(users, empty, empty, empty, [np.zeros(0, np.int64)] * 3), settings.lake.sequences_dir(day)
    )
    assert recommend.run(settings, day, version=version)["users"] == 0
    assert not (stale / "old.parquet").exists()
    for table in ("user_profiles", "user_segments"):
        assert len(pd.read_parquet(settings.lake.nightly_table_dir(table, day))) == 0, table


def test_the_gate_never_overwrites_a_champion_moved_by_hand_while_it_scored(tmp_path, monkeypatch):
    """The gate reads the champion, scores for minutes, then moves the alias: a promotion by hand made meanwhile was
    silently overwritten. It now re-reads the alias right before moving it and refuses, saying why."""
    from jobs import promote
    from model_lib.serving import registry

    settings = get_settings(data_dir=tmp_path / "data", seq_len=8)
    by_hand, vocabulary = register_tiny_model(settings, seed=3)
    challenger, _ = register_tiny_model(settings, seed=4)
    day = DS + dt.timedelta(days=9)
    settings.lake.vocab_dir(day).mkdir(parents=True)
    vocabulary.to_parquet(settings.lake.vocab_dir(day) / "part-0.parquet", index=False)
    write_sequences(random_users(40, seed=9), settings.lake.sequences_dir(day), files=1)
    scored = promote.holdout_report

    def a_person_promotes_meanwhile(*args):
        if registry.alias_version(registry.configure(settings), settings, registry.CHAMPION) is None:
            promote.promote_version(settings, by_hand)
        return scored(*args)

    monkeypatch.setattr(promote, "holdout_report", a_person_promotes_meanwhile)
    decision = promote.gate(settings, day, challenger=challenger)
    assert decision["champion_before"] is None and not decision["promoted"]
    assert f"moved from vNone to v{by_hand}" in decision["reason"]
    client = registry.configure(settings)
    assert registry.alias_version(client, settings, registry.CHAMPION) == by_hand
    tags = client.get_model_version(settings.model.model_name, str(challenger)).tags
    assert tags["gate_decision"] == "held (champion changed)"

    monkeypatch.setattr(promote, "holdout_report", scored)  # nobody meddles: the gate compares and decides
    again = promote.gate(settings, day, challenger=challenger)
    assert again["champion_before"] == by_hand and "champion moved" not in again["reason"]


def test_the_anomaly_percentile_ranks_only_the_top_and_equals_the_exact_percent_rank(spark):
    """The percentile ran in one unpartitioned window over every scored user (one task holding the whole day); now
    a distributed approximate quantile bounds the candidates, and only they are ranked: the rows are the same."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from model_lib.serving import nightly_tables

    users = 20_000
    scored = spark.range(users, numPartitions=4).select(
        F.format_string("u%05d", "id").alias("user_id"),
        F.round(F.rand(11) * 50, 1).alias("anomaly_score"),  # rounded: many ties, broken by user id
        F.lit(1).cast("long").alias("anomaly_events"),
        F.lit(0.5).alias("outside_top_share"),
        F.lit("i1").alias("most_surprising_item_id"),
    )
    published = nightly_tables.anomaly_rows(scored, 0.99, DS, "m", 1).toPandas().sort_values("user_id")
    exact = (
        scored.withColumn("percentile", F.percent_rank().over(Window.orderBy("anomaly_score", "user_id")))
        .where("percentile >= 0.99")
        .toPandas()
        .sort_values("user_id")
    )
    assert len(published) == len(exact) == 200
    assert published["user_id"].tolist() == exact["user_id"].tolist()
    np.testing.assert_allclose(published["percentile"], exact["percentile"])
    plan = nightly_tables.anomaly_rows(scored, 0.99, DS, "m", 1)._jdf.queryExecution().executedPlan().toString()
    window_input = plan[plan.index("Window [row_number()") :]
    assert "Filter" in window_input and "anomaly_score" in window_input.split("Filter", 1)[1].splitlines()[0]
