"""
### reco_nightly — sessionize -> resolve champion -> recommend -> publish

Every day: rebuilds the users' sequences up to the logical date, pins the `champion` model version once, scores
every user with history (top-K unseen items, with the reason item), and publishes the day into the warehouse
tables `recommendations` and `recommendation_runs` in one transaction (a re-run replaces the day).

Reads `lake/raw/events/dt<=ds` and the MLflow registry; writes `lake/sequences|recommendations/ds=ds` and the warehouse.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, dag, task

from model_lib.config import get_settings

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@dag(
    dag_id="reco_nightly",
    schedule="@daily",
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["reco", "nightly"],
    doc_md=__doc__,
    default_args={"owner": "ml-platform", "retries": 0},
    params={
        "k": Param(
            get_settings().top_k, type="integer", minimum=1, maximum=500, description="recommendations per user"
        )
    },
)
def reco_nightly():
    sessionize = SparkSubmitOperator(
        task_id="sessionize",
        application=str(JOBS / "sessionize.py"),
        application_args=["--ds", "{{ ds }}"],
        conn_id="spark_default",
        name="reco-sessionize-{{ ds }}",
        doc_md="Spark: raw events up to ds -> lake/sequences, lake/vocab, lake/quarantine for ds.",
    )

    @task(doc_md="Resolves `champion` to a version number once; every later task uses that version.")
    def resolve_champion() -> int:
        from model_lib import registry

        settings = get_settings()
        version = registry.alias_version(registry.configure(settings), settings, registry.CHAMPION)
        if version is None:
            raise LookupError(f"{settings.model_name} has no `champion` alias: run reco_training first")
        print(f"[reco] this run uses {settings.model_name} v{version}")
        return version

    recommend = SparkSubmitOperator(
        task_id="recommend",
        application=str(JOBS / "recommend.py"),
        application_args=[
            "--ds",
            "{{ ds }}",
            "--model-version",
            "{{ ti.xcom_pull(task_ids='resolve_champion') }}",
            "--k",
            "{{ params.k }}",
        ],
        conn_id="spark_default",
        name="reco-recommend-{{ ds }}",
        doc_md="Spark mapInPandas: top-K per user with the pinned version -> lake/recommendations/ds.",
    )

    @task(doc_md="Warehouse: replace the day in `recommendations` in one transaction; log `recommendation_runs`.")
    def publish(ds: str | None = None, run_id: str | None = None) -> dict:
        from jobs import publish as job
        from model_lib.config import parse_ds

        return job.run(get_settings(), parse_ds(ds), run_id)

    sessionize >> resolve_champion() >> recommend >> publish()


reco_nightly()
