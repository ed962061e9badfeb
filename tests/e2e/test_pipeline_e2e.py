"""Both DAGs end to end through real Airflow (`airflow dags test`), Spark, TensorFlow, MLflow and DuckDB,
on a small synthetic clickstream, then the warehouse is checked against the lake."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.airflow_pipeline import BIN, K

pytestmark = pytest.mark.slow


def test_training_registers_a_champion(pipeline):
    from model_lib.serving import registry

    settings, logs = pipeline.settings, pipeline.logs
    client = registry.configure(settings)
    assert registry.alias_version(client, settings, registry.CHAMPION) == 1
    assert registry.alias_version(client, settings, registry.CHALLENGER) == 1
    assert "[reco] promotion decision" in logs["training"]
    assert f"incremental (continuing the state of {pipeline.trained_day})" in logs["nightly"]
    # The JVM spark-submit started had the night's options (read back from the running JVM): a full rebuild keeps
    # the optimizing JIT, an incremental night compiles with the quick tier only.
    assert "JIT C1 + C2, class archive mapped" in logs["training"]
    assert "JIT C1 only (a job of seconds), class archive mapped" in logs["nightly"]
    # The recommend job's first night has no recorded run to size its JVM by: both tiers (jobs/recommend.quick_jit).
    assert "JIT C1 + C2, class archive mapped" in logs["nightly"]


def test_the_registered_champion_serves_raw_item_ids(pipeline):
    import mlflow
    import pandas as pd

    settings = pipeline.settings
    mlflow.set_tracking_uri(settings.engines.mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model.model_name}@champion")
    assert {spec.name for spec in model.metadata.signature.inputs} == {"history", "event_types", "timestamps"}
    vocabulary = pd.read_parquet(settings.lake.vocab_dir(pipeline.trained_day))
    history = vocabulary["item_id"].head(3).tolist()
    out = model.predict(pd.DataFrame({"history": [history], "event_types": [["view"] * 3]}), params={"k": 5})
    recommended = list(out["item_ids"][0])
    assert len(set(recommended)) == 5 and not set(recommended) & set(history)
    assert set(recommended) <= set(vocabulary["item_id"]) and set(out["reason_item_ids"][0]) <= set(history)


def test_every_user_gets_k_distinct_unseen_items_from_the_champion(pipeline):
    from model_lib.data.sequence_files import read_sequences
    from model_lib.storage.warehouse import open_warehouse

    settings, ds = pipeline.settings, pipeline.ds
    sequences = read_sequences(settings.lake.sequences_dir(ds))
    vocabulary = __import__("pandas").read_parquet(settings.lake.vocab_dir(ds))
    ids = dict(zip(vocabulary["item_index"], vocabulary["item_id"], strict=True))
    rows = open_warehouse(settings.engines.warehouse_url).query(
        "SELECT user_id, rank, item_id, model_version FROM recommendations WHERE ds = ?", [ds]
    )
    users_with_history = {u for u, n in zip(sequences.user_ids, sequences.lengths, strict=True) if n > 0}
    assert set(rows["user_id"]) == users_with_history
    assert set(rows["model_version"]) == {1}
    by_user = rows.groupby("user_id")
    assert (by_user["rank"].apply(sorted).apply(lambda r: r == list(range(1, K + 1)))).all()
    assert (by_user["item_id"].nunique() == K).all()
    for row, user in enumerate(sequences.user_ids):
        seen = {ids[i] for i in np.concatenate([sequences.items[row], sequences.older_items[row]]) if i >= 2}
        recommended = set(rows.loc[rows["user_id"] == user, "item_id"])
        assert not (seen & recommended), user


def test_each_run_ends_with_a_summary_of_its_steps(pipeline):
    nightly, training = pipeline.logs["nightly"], pipeline.logs["training"]
    assert "[reco] run summary: sessionize: status=succeeded, mode=incremental, read=" in nightly
    assert re.search(r"\[reco\] run summary: publish: model_version=1, users=\d+, rows=\d+, coverage=", nightly)
    assert "[reco] run summary: resolve_champion: model_version=1" in nightly
    assert re.search(r"\[reco\] run summary: train: version=1, test.hr_10=[0-9.]+, test.ndcg_10=", training)
    assert "[reco] run summary: promote: challenger=1, promoted=True" in training


def test_a_rerun_next_to_a_backfill_of_another_day_changes_nothing_and_they_do_not_interfere(pipeline):
    """At the same time: a re-run of the day that already succeeded, and a full-rebuild run of a later, quiet day
    (its raw partition is committed but empty). The re-run's rows hash exactly as before; the quiet day publishes
    the same lists from history; neither day holds a duplicate, and both runs are recorded."""
    from model_lib.storage.warehouse import open_warehouse

    settings, ds = pipeline.settings, pipeline.ds
    later = ds + dt.timedelta(days=4)
    settings.lake.raw_events_day_dir(later).mkdir()
    warehouse = open_warehouse(settings.engines.warehouse_url)
    before = day_digest(warehouse, ds)
    successes_before = recorded_successes(warehouse, ds)

    commands = {
        ds: ["dags", "test", "reco_nightly", ds.isoformat()],
        later: ["dags", "test", "reco_nightly", later.isoformat(), "--conf", '{"full_rebuild": true}'],
    }
    started = time.monotonic()
    runs = {
        day: subprocess.Popen(
            [str(BIN / "airflow"), *args], env=pipeline.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for day, args in commands.items()
    }
    logs = {day: run.communicate(timeout=1200)[0] for day, run in runs.items()}
    waited = [str(day) for day, log in logs.items() if "is in use by" in log]
    print(f"two nightly runs side by side: {time.monotonic() - started:.0f} s; publish waited for the file: {waited}")
    for day, run in runs.items():
        assert run.returncode == 0, f"the run of {day} failed:\n{logs[day][-6000:]}"
    assert "mode=incremental" in logs[ds] and "mode=full" in logs[later]
    # They really ran at the same time: their task instances' [start, end] windows in the metadata DB overlap.
    windows = task_windows(pipeline, [ds, later])
    overlap = min(end for _, end in windows.values()) - max(start for start, _ in windows.values())
    print(f"the two runs overlapped for {overlap.total_seconds():.0f} s: {windows}")
    assert overlap.total_seconds() > 10, windows

    assert day_digest(warehouse, ds) == before, "re-running a day that had succeeded changed its rows"
    assert day_digest(warehouse, later, ds_column=False) == day_digest(warehouse, ds, ds_column=False)
    for day in (ds, later):
        counts = warehouse.query(
            "SELECT count(*) AS n, count(DISTINCT (user_id, rank)) AS keys FROM recommendations WHERE ds = ?", [day]
        )
        assert counts["n"][0] == counts["keys"][0] > 0, day
    assert recorded_successes(warehouse, ds) == successes_before + 1
    assert recorded_successes(warehouse, later) == 1


def task_windows(pipeline, days: list[dt.date]) -> dict[dt.date, tuple]:
    """Per day, (first task start, last task end) of its newest reco_nightly run, from the Airflow metadata DB."""
    import sqlite3

    import pandas as pd

    with sqlite3.connect(Path(pipeline.env["AIRFLOW_HOME"]) / "airflow.db") as metadata:
        runs = pd.read_sql(
            "SELECT r.logical_date, r.run_id, min(t.start_date) AS started, max(t.end_date) AS ended "
            "FROM dag_run r JOIN task_instance t ON t.dag_id = r.dag_id AND t.run_id = r.run_id "
            "WHERE r.dag_id = 'reco_nightly' GROUP BY r.logical_date, r.run_id",
            metadata,
        )
    runs["day"] = pd.to_datetime(runs["logical_date"], utc=True, format="ISO8601").dt.date
    newest = runs.sort_values("started").groupby("day").tail(1).set_index("day")
    return {day: (pd.Timestamp(newest.loc[day, "started"]), pd.Timestamp(newest.loc[day, "ended"])) for day in days}


def day_digest(warehouse, day: dt.date, ds_column: bool = True) -> str:
    """A content hash of one published day: every column of every row, in key order."""
    rows = warehouse.query(
        "SELECT CAST(ds AS VARCHAR) AS ds, user_id, rank, item_id, score, source, reason_item_id, model_name, "
        "model_version FROM recommendations WHERE ds = ? ORDER BY user_id, rank",
        [day],
    )
    if not ds_column:
        rows = rows.drop(columns="ds")
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()


def recorded_successes(warehouse, day: dt.date) -> int:
    runs = warehouse.query("SELECT count(*) AS n FROM recommendation_runs WHERE ds = ? AND status = 'success'", [day])
    return int(runs["n"][0])


def test_a_missing_raw_partition_skips_or_fails_the_run_as_configured(pipeline):
    """The sensor waits RECO_RAW_WAIT_MINUTES (3 s here), then skips or fails; either way nothing is published."""
    from model_lib.storage.warehouse import open_warehouse

    skip_day, fail_day = pipeline.ds + dt.timedelta(days=2), pipeline.ds + dt.timedelta(days=3)
    skipped = pipeline.airflow(
        "dags", "test", "reco_nightly", skip_day.isoformat(), env={**pipeline.env, "RECO_ON_MISSING_RAW": "skip"}
    )
    assert f"dt={skip_day}: not there yet; after 0.05 min this skips the run" in skipped
    assert "[reco] run summary" not in skipped and "[reco] FAILED" not in skipped

    failed = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "reco_nightly", fail_day.isoformat()],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = failed.stdout + failed.stderr
    # The failure callback's summary: step, ds, error; sensor time-outs are not retried.
    assert f"[reco] FAILED reco_nightly.wait_for_raw_events ds={fail_day} (try 1 of 3)" in log, log[-5000:]
    assert "[reco]   error: AirflowSensorTimeout: Sensor has timed out" in log
    assert "sessionize ds=" not in log

    published = open_warehouse(pipeline.settings.engines.warehouse_url).query("SELECT DISTINCT ds FROM recommendations")
    assert {skip_day, fail_day}.isdisjoint(set(published["ds"]))


def test_gate_keeps_the_better_champion_then_manual_promote_and_rollback(pipeline):
    """Runs last: it moves the champion alias (and puts it back)."""
    import keras
    import mlflow
    import numpy as np

    from jobs import promote
    from model_lib.data.vocabulary import catalogue_size
    from model_lib.model.network import NextItemModel, build_model
    from model_lib.serving import registry
    from model_lib.serving.recommender import Recommender

    settings, ds = pipeline.settings, pipeline.ds
    client = registry.configure(settings)
    vocabulary = __import__("pandas").read_parquet(settings.lake.vocab_dir(ds))
    # A challenger worse than any trained model whatever ran before in this process (the global RNG): seeded, and
    # its item bias ranks the catalogue from the least popular item up. Two epochs on tiny data leave the champion
    # near chance, so a merely untrained model can beat it by luck.
    keras.utils.set_random_seed(7)
    untrained = NextItemModel(
        catalogue_size(vocabulary), settings.sessionize.num_event_types, settings.sessionize.num_gap_buckets
    )
    build_model(untrained)
    anti_popular = np.zeros(untrained.num_items, np.float32)
    anti_popular[vocabulary["item_index"].to_numpy()] = -10.0 * np.log1p(vocabulary["count"].to_numpy())
    untrained.item_bias.assign(anti_popular)
    with mlflow.start_run(run_name="untrained-challenger"):
        uri = registry.log_recommender(Recommender(untrained, vocabulary, settings.sessionize.event_types), settings)
    weak = registry.register(client, uri, settings, tags={"purpose": "test"})
    assert weak == 2 and registry.alias_version(client, settings, registry.CHALLENGER) == 2

    decision = promote.gate(settings, ds, challenger=weak)
    assert decision["promoted"] is False, decision
    assert decision["champion_ndcg_10"] > decision["challenger_ndcg_10"]
    assert registry.alias_version(client, settings, registry.CHAMPION) == 1
    tags = client.get_model_version(settings.model.model_name, str(weak)).tags
    assert tags["gate_decision"] == "held" and "does not beat v1" in tags["gate_reason"]
    assert tags["champion_comparison"].startswith("v2 ")

    promote.promote_version(settings, weak)
    assert registry.alias_version(client, settings, registry.CHAMPION) == 2
    assert promote.rollback(settings) == {"champion": 1, "rolled_back_from": 2}
    assert registry.alias_version(client, settings, registry.CHAMPION) == 1

    # auto_promote off (the training form's switch): a challenger that passes is tagged, champion stays put.
    with mlflow.start_run(run_name="copy-of-the-champion"):
        uri = registry.log_recommender(registry.load_recommender(settings, 1), settings)
    passing = registry.register(client, uri, settings, tags={"purpose": "test"})
    lenient = settings.updated(promote_margin=-1.0)
    decision = promote.gate(lenient, ds, challenger=passing, auto_promote=False)
    assert decision["promoted"] is False and "auto_promote is off" in decision["reason"], decision
    assert registry.alias_version(client, settings, registry.CHAMPION) == 1
    tags = client.get_model_version(settings.model.model_name, str(passing)).tags
    assert tags["gate_decision"] == "passed, not promoted (auto_promote off)"


def test_the_nightly_run_publishes_next_behaviour_and_profiles_from_the_same_champion(pipeline):
    """The synthetic clickstream has views, carts, purchases and likes: the champion was trained with the event-type
    head, and the nightly run published every table of the day from that one version."""
    from model_lib.storage.warehouse import open_warehouse

    settings, ds = pipeline.settings, pipeline.ds
    warehouse = open_warehouse(settings.engines.warehouse_url)
    served = warehouse.query(
        "SELECT count(DISTINCT user_id) AS n, min(model_version) AS v FROM recommendations WHERE ds = ?", [ds]
    )
    scored, version = served["n"][0], served["v"][0]
    behaviour = warehouse.query(
        "SELECT user_id, sum(probability) AS total, count(*) AS types, min(model_version) AS v, "
        "max(model_version) AS w FROM user_next_behaviour WHERE ds = ? GROUP BY user_id",
        [ds],
    )
    assert len(behaviour) == scored and (behaviour["types"] == len(settings.sessionize.event_types)).all()
    assert np.allclose(behaviour["total"], 1.0, atol=1e-5) and set(behaviour["v"]) == set(behaviour["w"]) == {version}
    profiles = warehouse.query("SELECT count(*) AS n FROM user_profiles WHERE ds = ?", [ds])["n"][0]
    segments = warehouse.segments(ds)
    assert profiles == scored == segments["users"].sum()
    # The segments are the champion's own, fitted when reco_training trained it; its run holds their picture.
    import mlflow

    from model_lib.serving import registry

    described = {
        entry["segment"]: entry["description"] for entry in registry.trained_on(settings, version).segments.described
    }
    assert 0 < len(described) <= settings.serving.profile_segments
    assert all(described[row.segment] == row.description for row in segments.itertuples())
    client = registry.configure(settings)
    run_id = client.get_model_version(settings.model.model_name, str(version)).tags["run_id"]
    assert "user_segments.png" in [artifact.path for artifact in mlflow.MlflowClient().list_artifacts(run_id)]
    # The Spark ALS baseline was scored on the same hold-out as the model.
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    assert metrics["als_test_users"] == metrics["test_users"] > 0 and 0 <= metrics["als_test_ndcg_10"] <= 1, metrics
    tables = warehouse.query("SELECT DISTINCT table_name FROM published_tables WHERE ds = ?", [ds])
    assert set(tables["table_name"]) >= {"recommendations", "user_next_behaviour", "user_profiles", "user_segments"}
    # Anomalies: only users with events on the day are scored, and only the top percentile is published.
    anomalous = warehouse.query("SELECT percentile, model_version FROM user_anomalies WHERE ds = ?", [ds])
    assert (anomalous["percentile"] >= settings.serving.anomaly_percentile).all()
    assert set(anomalous["model_version"]) <= {version}
