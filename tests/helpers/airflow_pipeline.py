"""One small trained platform for the Airflow tests: synthetic raw events, then `reco_training` for the day before
the last and `reco_nightly` for the last day, both through real `airflow dags test`.

Built once per test session (the `pipeline` fixture in conftest) and shared by the `airflow dags test` suite and
the UI-path suite, because training is the slow part.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers.processes import run_ok
from model_lib.config import Settings, get_settings
from model_lib.runtime import engine_environment

BIN = Path(sys.executable).parent
K = 10
# The DAGs read these when they are parsed: tiny data, two epochs, and a missing raw day decided in seconds.
OVERRIDES = {
    "RECO_MIN_ITEM_COUNT": "2",
    "RECO_SEQ_LEN": "20",
    "RECO_EPOCHS": "2",
    "RECO_TOP_K": str(K),
    "RECO_BATCH_SIZE": "64",
    "RECO_RAW_WAIT_MINUTES": "0.05",
    "RECO_RAW_POKE_SECONDS": "1",
}


# Passwords the shared pipeline runs with (trust auth and an open MLflow server accept them and ignore them).
WAREHOUSE_PASSWORD = "pw-warehouse-Q7x2"
MLFLOW_PASSWORD = "pw-mlflow-K9d4"
SPARK_PASSWORD = "pw-spark-conn-M3v8"
SECRETS = (WAREHOUSE_PASSWORD, MLFLOW_PASSWORD, SPARK_PASSWORD)


def with_passwords(warehouse_url: str, mlflow_url: str) -> dict[str, str]:
    """The environment that puts a password into every URL the pipeline uses."""
    spark_connection = {"conn_type": "spark", "host": "local[2]", "login": "reco", "password": SPARK_PASSWORD}
    return {
        "RECO_WAREHOUSE_URL": warehouse_url.replace(
            "postgresql://reco@", f"postgresql://reco:{WAREHOUSE_PASSWORD}@", 1
        ),
        "RECO_MLFLOW_TRACKING_URI": mlflow_url.replace("http://", f"http://reco:{MLFLOW_PASSWORD}@", 1),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark_connection),
    }


@dataclass
class Pipeline:
    settings: Settings
    env: dict[str, str]
    ds: dt.date  # the nightly run's day; the model was trained on the day before
    logs: dict[str, str]

    @property
    def trained_day(self) -> dt.date:
        return self.ds - dt.timedelta(days=1)

    def airflow(self, *args: str, env: dict[str, str] | None = None) -> str:
        return run_ok([str(BIN / "airflow"), *args], env or self.env)[1]


def build_pipeline(data_dir: Path, extra_env: dict[str, str] | None = None) -> Pipeline:
    """`extra_env` (RECO_WAREHOUSE_URL, RECO_MLFLOW_TRACKING_URI, AIRFLOW_CONN_*, ...) applies to every process."""
    extra_env = extra_env or {}
    env = {**os.environ, "RECO_DATA_DIR": str(data_dir), **OVERRIDES}
    urls = {
        key: extra_env[f"RECO_{key.upper()}"]
        for key in ("warehouse_url", "mlflow_tracking_uri")
        if f"RECO_{key.upper()}" in extra_env
    }
    env.update(engine_environment(get_settings(data_dir=data_dir, **urls).engines))
    env.update(extra_env)
    settings = get_settings(data_dir=data_dir, min_item_count=2, seq_len=20, top_k=K, **urls)
    made = run_ok([str(BIN / "reco"), "data", "synth", "--users", "150", "--items", "80", "--days", "4"], env)[0]
    ds = dt.date.fromisoformat(json.loads(made.strip().splitlines()[-1])["last_dt"])
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(settings, env, ds, {})
    pipeline.airflow("db", "migrate")
    # Trained on the day before the last; the nightly run of the last day then continues that day's state
    # incrementally and scores sequences indexed with a newer vocabulary than the model's.
    pipeline.logs["training"] = pipeline.airflow("dags", "test", "reco_training", pipeline.trained_day.isoformat())
    pipeline.logs["nightly"] = pipeline.airflow("dags", "test", "reco_nightly", ds.isoformat())
    return pipeline
