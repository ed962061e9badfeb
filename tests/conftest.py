"""Shared fixtures: settings pointing at a temporary data folder, one local[2] SparkSession, one PostgreSQL server
and one small trained pipeline per test run."""

from __future__ import annotations

import os

import pytest

from model_lib.config import Settings, get_settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    # Small windows whose sequences keep only the window (history_len 0 = seq_len), so that a few events overflow
    # into the older items and the state is exercised.
    return get_settings(data_dir=tmp_path / "data", min_item_count=1, seq_len=8, history_len=0)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from model_lib.storage.spark import spark_session

    os.environ.setdefault("RECO_DATA_DIR", str(tmp_path_factory.mktemp("spark-data")))
    session = spark_session(get_settings(spark_shuffle_partitions=2).engines, "reco-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def postgres_url():
    """One real PostgreSQL server (127.0.0.1, free port) for the whole test run."""
    from helpers.postgres_server import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse_url(request, settings) -> str:
    """Each warehouse test runs against the embedded DuckDB file and against a fresh PostgreSQL database."""
    if request.param == "duckdb":
        return settings.engines.warehouse_url
    from helpers.postgres_server import fresh_database

    return fresh_database(request.getfixturevalue("postgres_url"), f"t_{abs(hash(request.node.nodeid)):x}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 for the whole test run -> its URL (no credentials)."""
    import sys
    import urllib.request
    from pathlib import Path

    from helpers.processes import free_port, start_server, stop_server, wait_for

    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    server = start_server(command, dict(os.environ), folder / "server.log")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: urllib.request.urlopen(f"{url}/health", timeout=5).status == 200, "the MLflow server")
    yield url
    stop_server(server)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, postgres_url, mlflow_server):
    """Synthetic events, a champion trained by reco_training and one reco_nightly day (see airflow_pipeline), on
    the deployed shape: a PostgreSQL warehouse and an MLflow server, each reached with a password in its URL, and
    a password in the Airflow Spark connection (tests/e2e/test_secrets.py checks that none of them leaks)."""
    from helpers.airflow_pipeline import build_pipeline, with_passwords
    from helpers.postgres_server import fresh_database

    extra = with_passwords(fresh_database(postgres_url, "e2e_pipeline"), mlflow_server)
    return build_pipeline(tmp_path_factory.mktemp("e2e") / "data", extra)
