"""Pieces both DAG files share: the common DAG arguments and the spark-submit task factory.

Imported at DAG-parse time, so it stays light: Airflow and the Spark provider only, never TensorFlow or PySpark.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param

from model_lib.config import SESSIONIZE_MODES

JOBS = Path(__file__).resolve().parents[1] / "jobs"

COMMON_DAG_ARGS = {
    "start_date": pendulum.datetime(2000, 1, 1, tz="UTC"),
    "catchup": False,
    "max_active_runs": 1,
    # Every task is an idempotent function of ds, so retrying is safe: 1, 2, 4 ... minutes apart, at most 30.
    "default_args": {
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
    },
}


def spark_job(task_id: str, args: list[str], doc_md: str) -> SparkSubmitOperator:
    """`spark-submit jobs/<task_id>.py ARGS` on the `spark_default` connection (local[2] unless configured)."""
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(JOBS / f"{task_id}.py"),
        application_args=args,
        conn_id="spark_default",
        name=f"reco-{task_id}-{{{{ ds }}}}",
        doc_md=doc_md,
    )


SESSIONIZE_PARAMS = {
    "sessionize_mode": Param(
        "auto",
        enum=list(SESSIONIZE_MODES),
        description="auto: incremental from yesterday's state when it exists, else a full rebuild; "
        "full: re-read every raw day up to ds (backfills, a changed sequence length)",
    )
}


def sessionize_task() -> SparkSubmitOperator:
    return spark_job(
        "sessionize",
        ["--ds", "{{ ds }}", "--mode", "{{ params.sessionize_mode }}"],
        "Spark: the day's raw events + yesterday's state (or every raw day, in a full rebuild) -> "
        "lake/sequences, lake/vocab, lake/state for ds; rejects to lake/quarantine/events/dt=; counts to "
        "lake/run_stats/sessionize.",
    )
