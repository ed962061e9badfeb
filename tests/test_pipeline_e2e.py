"""Both DAGs end to end through real Airflow (`airflow dags test`), Spark, TensorFlow, MLflow and DuckDB,
on a small synthetic clickstream, then the warehouse is checked against the lake."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from processes import run_ok as run

from model_lib.config import get_settings
from model_lib.runtime import engine_environment

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
K = 10


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("e2e") / "data"
    overrides = {
        "RECO_DATA_DIR": str(data_dir),
        "RECO_MIN_ITEM_COUNT": "2",
        "RECO_SEQ_LEN": "20",
        "RECO_EPOCHS": "2",
        "RECO_TOP_K": str(K),
        "RECO_BATCH_SIZE": "64",
    }
    env = {**os.environ, **overrides}
    env.update(engine_environment(get_settings(data_dir=data_dir)))
    settings = get_settings(data_dir=data_dir, min_item_count=2, seq_len=20, top_k=K)
    made = json.loads(
        run([str(BIN / "reco"), "data", "synth", "--users", "150", "--items", "80", "--days", "4"], env)[0]
        .strip()
        .splitlines()[-1]
    )
    # Trained on the day before the last; the nightly run of the last day then continues that day's state
    # incrementally and scores sequences indexed with a newer vocabulary than the model's.
    ds = dt.date.fromisoformat(made["last_dt"])
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    run([str(BIN / "airflow"), "db", "migrate"], env)
    logs = {
        "training": run([str(BIN / "airflow"), "dags", "test", "reco_training", trained_day(ds).isoformat()], env)[1],
        "nightly": run([str(BIN / "airflow"), "dags", "test", "reco_nightly", ds.isoformat()], env)[1],
    }
    return settings, env, ds, logs


def trained_day(ds: dt.date) -> dt.date:
    return ds - dt.timedelta(days=1)


def test_training_registers_a_champion(pipeline):
    from model_lib import registry

    settings, env, ds, logs = pipeline
    client = registry.configure(settings)
    assert registry.alias_version(client, settings, registry.CHAMPION) == 1
    assert registry.alias_version(client, settings, registry.CHALLENGER) == 1
    assert "[reco] promotion decision" in logs["training"]
    assert f"incremental (continuing the state of {trained_day(ds)})" in logs["nightly"]


def test_the_registered_champion_serves_raw_item_ids(pipeline):
    import mlflow
    import pandas as pd

    settings, env, ds, logs = pipeline
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")
    assert {spec.name for spec in model.metadata.signature.inputs} == {"history", "event_types", "timestamps"}
    vocabulary = pd.read_parquet(settings.vocab_dir(trained_day(ds)))
    history = vocabulary["item_id"].head(3).tolist()
    out = model.predict(pd.DataFrame({"history": [history], "event_types": [["view"] * 3]}), params={"k": 5})
    recommended = list(out["item_ids"][0])
    assert len(set(recommended)) == 5 and not set(recommended) & set(history)
    assert set(recommended) <= set(vocabulary["item_id"]) and out["reason_item_id"][0] in history


def test_every_user_gets_k_distinct_unseen_items_from_the_champion(pipeline):
    from model_lib.lake import read_sequences
    from model_lib.warehouse import open_warehouse

    settings, env, ds, logs = pipeline
    sequences = read_sequences(settings.sequences_dir(ds))
    vocabulary = __import__("pandas").read_parquet(settings.vocab_dir(ds))
    ids = dict(zip(vocabulary["item_index"], vocabulary["item_id"], strict=True))
    rows = open_warehouse(settings.warehouse_url).query(
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


def test_a_day_without_raw_events_still_publishes_from_history(pipeline):
    from model_lib.warehouse import open_warehouse

    settings, env, ds, logs = pipeline
    next_day = ds + dt.timedelta(days=1)
    log = run([str(BIN / "airflow"), "dags", "test", "reco_nightly", next_day.isoformat()], env)[1]
    assert f"no raw events for dt={next_day}" in log
    counts = open_warehouse(settings.warehouse_url).query(
        "SELECT CAST(ds AS VARCHAR) AS ds, count(*) AS n FROM recommendations GROUP BY 1 ORDER BY 1"
    )
    assert counts["ds"].tolist() == [ds.isoformat(), next_day.isoformat()]
    assert counts["n"].iloc[0] == counts["n"].iloc[1]


def test_gate_keeps_the_better_champion_then_manual_promote_and_rollback(pipeline):
    """Runs last: it moves the champion alias."""
    import mlflow

    from jobs import promote
    from model_lib import registry
    from model_lib.model import NextItemModel
    from model_lib.scoring import Recommender, build_model

    settings, env, ds, logs = pipeline
    client = registry.configure(settings)
    vocabulary = __import__("pandas").read_parquet(settings.vocab_dir(ds))
    untrained = NextItemModel(
        int(vocabulary["item_index"].max()) + 1, settings.num_event_types, settings.num_gap_buckets
    )
    build_model(untrained)
    with mlflow.start_run(run_name="untrained-challenger"):
        uri = registry.log_recommender(Recommender(untrained, vocabulary, settings.event_types), settings)
    weak = registry.register(client, uri, settings, tags={"purpose": "test"})
    assert weak == 2 and registry.alias_version(client, settings, registry.CHALLENGER) == 2

    decision = promote.gate(settings, ds, challenger=weak)
    assert decision["promoted"] is False, decision
    assert decision["champion_ndcg_10"] > decision["challenger_ndcg_10"]
    assert registry.alias_version(client, settings, registry.CHAMPION) == 1
    tags = client.get_model_version(settings.model_name, str(weak)).tags
    assert tags["gate_decision"] == "held" and "does not beat v1" in tags["gate_reason"]
    assert tags["champion_comparison"].startswith("v2 ")

    promote.promote_version(settings, weak)
    assert registry.alias_version(client, settings, registry.CHAMPION) == 2
    assert promote.rollback(settings) == {"champion": 1, "rolled_back_from": 2}
    assert registry.alias_version(client, settings, registry.CHAMPION) == 1
