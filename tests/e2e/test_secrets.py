"""No credential the product is configured with reaches anything a user of the Airflow UI, of MLflow or of the lake
can read. The shared pipeline (reco_training, then reco_nightly, through real `airflow dags test`; see conftest)
runs with a password in every URL: the PostgreSQL warehouse, the MLflow tracking server and the Airflow Spark
connection."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.airflow_pipeline import SECRETS
from model_lib.redaction import redact

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "text, masked",
    [
        ("postgresql://reco:s3cr%40t@db:5432/reco", "postgresql://reco:***@db:5432/reco"),
        ("http://user:tok@mlflow:5000/path", "http://user:***@mlflow:5000/path"),
        ("spark://admin:pw@master:7077", "spark://admin:***@master:7077"),
        ("host=db user=reco password=s3cret dbname=reco", "host=db user=reco password=*** dbname=reco"),
        ("https://h/x?user=a&password=s3cret&token=t0k", "https://h/x?user=a&password=***&token=***"),
        (
            '{"conn_type": "spark", "password": "s3cret", "login": "x"}',
            '{"conn_type": "spark", "password": "***", "login": "x"}',
        ),
        # libpq's quoted values, with an escaped quote inside; sslpassword; spaces around `=`
        ("host=db password='a b\\'c' user=x", "host=db password='***' user=x"),
        ("sslmode=verify-full sslpassword=k3y dbname=r", "sslmode=verify-full sslpassword=*** dbname=r"),
        ("host=db password = 'p w'", "host=db password = '***'"),
        # environment assignments, as `env` or a failed command line prints them
        ("PGPASSWORD=s3cret psql -h db", "PGPASSWORD=*** psql -h db"),
        ('MLFLOW_TRACKING_PASSWORD="t o k" mlflow ui', 'MLFLOW_TRACKING_PASSWORD="***" mlflow ui'),
        ("AIRFLOW__API__SECRET_KEY=abc123", "AIRFLOW__API__SECRET_KEY=***"),
        # JSON and Python reprs whose value holds escaped quotes: the tail must not leak
        ('{"password": "ab\\"cd\\"ef", "x": 1}', '{"password": "***", "x": 1}'),
        ("{'password': 'it\\'s', 'x': 1}", "{'password': '***', 'x': 1}"),
        ("duckdb:///data/warehouse/reco.duckdb and postgresql://reco@db/reco", None),  # nothing secret: unchanged
        ("tokens=5 passwords_checked=3 user=reco", None),  # names that do not end in a secret's word
    ],
)
def test_redact_masks_every_form_of_credential(text, masked):
    assert redact(text) == (masked or text)
    assert redact(redact(text)) == redact(text)
    assert (redact(text) != text) == (masked is not None)


def test_no_password_reaches_logs_stdout_mlflow_run_stats_or_xcom(pipeline):
    from mlflow import MlflowClient

    settings = pipeline.settings
    assert all(secret in json.dumps(pipeline.env) for secret in SECRETS)  # the URLs really carry them
    captured: dict[str, str] = {f"airflow dags test {name}": log for name, log in pipeline.logs.items()}
    for path in Path(pipeline.env["AIRFLOW_HOME"]).rglob("*.log"):
        captured[f"task log {path.name}"] = path.read_text(errors="replace")
    for command in (["settings"], ["show", "--user", "u0001"], ["summary", "--ds", pipeline.ds.isoformat()]):
        done = subprocess.run([str(BIN / "reco"), *command], env=pipeline.env, capture_output=True, text=True)
        captured[f"reco {command[0]}"] = done.stdout + done.stderr

    client = MlflowClient(settings.engines.mlflow_tracking_uri, settings.engines.mlflow_tracking_uri)
    experiments = client.search_experiments()
    runs = client.search_runs([experiment.experiment_id for experiment in experiments])
    for run in runs:
        captured[f"mlflow run {run.info.run_id}"] = json.dumps([run.data.params, run.data.tags])
    for version in client.search_model_versions(f"name = '{settings.model.model_name}'"):
        captured[f"model version {version.version}"] = json.dumps([version.tags, version.source, version.description])
    for path in settings.engines.mlflow_artifact_root.rglob("*"):
        if path.is_file() and path.suffix in ("", ".md", ".json", ".yaml", ".txt", ".html"):
            captured[f"artifact {path.name}"] = path.read_text(errors="replace")
    for path in settings.lake.lake_dir.glob("run_stats/*/*/*.parquet"):
        captured[f"run stats {path.parent.parent.name}"] = pd.read_parquet(path).to_json()
    with sqlite3.connect(Path(pipeline.env["AIRFLOW_HOME"]) / "airflow.db") as metadata:
        xcoms = metadata.execute("SELECT task_id, value FROM xcom").fetchall()
    for task_id, value in xcoms:
        captured[f"xcom {task_id}"] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    leaks = {
        where: text[max(0, text.index(secret) - 200) : text.index(secret) + 40]
        for where, text in captured.items()
        for secret in SECRETS
        if secret in text
    }
    assert not leaks, f"passwords found in: {leaks}"
    # The checks looked at real content: the run trained, registered and published with these URLs.
    assert len(runs) >= 1 and any(run.data.params for run in runs) and len(xcoms) >= 4
    assert "postgresql://reco:***@127.0.0.1" in captured["airflow dags test nightly"]  # printed, masked
    assert "last run" in captured["reco summary"] and "user segments on" in captured["reco summary"]
    assert "most anomalous users on" in captured["reco summary"]


def test_credentials_leave_the_url_for_the_client_variables():
    from model_lib.redaction import split_credentials

    assert split_credentials("http://us%40er:p%3Ass@mlflow:5000/x?y=1") == ("http://mlflow:5000/x?y=1", "us@er", "p:ss")
    assert split_credentials("sqlite:////data/mlflow.db") == ("sqlite:////data/mlflow.db", None, None)
