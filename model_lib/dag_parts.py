"""Pieces both DAG files share: the common DAG arguments and the spark-submit task factory.

Imported at DAG-parse time, so it stays light: Airflow and the Spark provider only, never TensorFlow or PySpark.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

JOBS = Path(__file__).resolve().parents[1] / "jobs"

COMMON_DAG_ARGS = {
    "start_date": pendulum.datetime(2000, 1, 1, tz="UTC"),
    "catchup": False,
    "max_active_runs": 1,
    "default_args": {"owner": "ml-platform", "retries": 0},
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


def sessionize_task() -> SparkSubmitOperator:
    return spark_job(
        "sessionize",
        ["--ds", "{{ ds }}"],
        "Spark: raw events up to ds -> lake/sequences, lake/vocab, lake/quarantine for ds.",
    )
