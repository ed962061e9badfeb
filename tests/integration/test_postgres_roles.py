"""docker/postgres-init.sh on a real PostgreSQL server: one role per service with only what it needs, and a
SELECT-only analyst (issue 37 §8; before, one superuser password served Airflow, MLflow and the warehouse)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from helpers.postgres_server import postgres_server

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_each_service_role_reaches_only_its_database_and_the_analyst_only_reads(tmp_path):
    shutil.copy(DOCKER / "make-secrets.sh", tmp_path)
    subprocess.run(["bash", str(tmp_path / "make-secrets.sh")], check=True, capture_output=True)
    with postgres_server() as url:
        host_port = url.split("@", 1)[1].split("/", 1)[0]
        host, port = host_port.split(":")
        env = {
            **os.environ,
            "PGHOST": host,
            "PGPORT": port,
            "POSTGRES_USER": "reco",
            "POSTGRES_DB": "postgres",
            "SECRETS_DIR": str(tmp_path / "secrets"),
        }
        done = subprocess.run(["bash", str(DOCKER / "postgres-init.sh")], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

        def connect(role: str, database: str):
            return psycopg.connect(f"postgresql://{role}@{host}:{port}/{database}", autocommit=True)

        with connect("warehouse_writer", "warehouse") as writer:
            writer.execute("CREATE TABLE recommendations (ds DATE, user_id TEXT)")
            writer.execute("INSERT INTO recommendations VALUES ('2024-01-01', 'u1')")
        with connect("analyst", "warehouse") as analyst:
            assert analyst.execute("SELECT count(*) FROM recommendations").fetchone() == (1,)
            for statement in (
                "INSERT INTO recommendations VALUES ('2024-01-02', 'u2')",
                "DELETE FROM recommendations",
                "CREATE TABLE mine (x INT)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    analyst.execute(statement)
        for role, database in (
            ("analyst", "airflow"),
            ("mlflow", "airflow"),
            ("airflow", "mlflow"),
            ("mlflow", "warehouse"),
        ):
            with pytest.raises(psycopg.OperationalError, match="permission denied|not have CONNECT"):
                connect(role, database).close()
        with connect("airflow", "airflow") as airflow, connect("mlflow", "mlflow") as mlflow:
            airflow.execute("CREATE TABLE dag_run (id INT)")
            mlflow.execute("CREATE TABLE experiments (id INT)")


def test_a_postgresql_backed_mlflow_store_keeps_the_password_its_uri_gives(tmp_path):
    """The credentials were moved out of every tracking URI for masking, but only MLflow's HTTP client reads
    MLFLOW_TRACKING_PASSWORD: a database-backed store lost its password and could not connect."""
    from model_lib.config import get_settings
    from model_lib.serving import registry

    with postgres_server(password="s3cret-pw") as url:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE mlflow_store")
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(url.replace(":s3cret-pw@", "@")).close()  # the server does require it
        store = url.rsplit("/", 1)[0] + "/mlflow_store"
        settings = get_settings(data_dir=tmp_path / "data", mlflow_tracking_uri=store)
        client = registry.configure(settings)
        assert client.get_experiment_by_name(registry.EXPERIMENT) is not None
        assert registry.aliased_training_days(settings) == {}
