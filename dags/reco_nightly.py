"""
### reco_nightly — sessionize -> resolve champion -> recommend -> publish

Every day: merges the day's raw events into the users' sequences (incrementally, from yesterday's state), pins
the `champion` model version once, scores every user with history (top-K unseen items, with the reason item), and
publishes the day into the warehouse tables `recommendations` and `recommendation_runs` in one transaction (a
re-run replaces the day). Backfill with `sessionize_mode=full` to re-read every raw day up to ds.

Reads `lake/raw/events/dt=ds`, yesterday's `lake/state` and the MLflow registry; writes
`lake/sequences|vocab|state|recommendations/ds=ds` and the warehouse.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from model_lib.config import MAX_TOP_K, get_settings
from model_lib.dag_parts import COMMON_DAG_ARGS, SESSIONIZE_PARAMS, sessionize_task, spark_job


@dag(
    dag_id="reco_nightly",
    schedule="@daily",
    tags=["reco", "nightly"],
    doc_md=__doc__,
    **COMMON_DAG_ARGS,
    params={
        **SESSIONIZE_PARAMS,
        "k": Param(
            get_settings().top_k, type="integer", minimum=1, maximum=MAX_TOP_K, description="recommendations per user"
        ),
    },
)
def reco_nightly():
    sessionize = sessionize_task()

    @task(doc_md="Resolves `champion` to a version number once; every later task uses that version.")
    def resolve_champion() -> int:
        from model_lib import registry

        settings = get_settings()
        version = registry.alias_version(registry.configure(settings), settings, registry.CHAMPION)
        if version is None:
            raise LookupError(f"{settings.model_name} has no `champion` alias: run reco_training first")
        print(f"[reco] this run uses {settings.model_name} v{version}")
        return version

    recommend = spark_job(
        "recommend",
        [
            "--ds",
            "{{ ds }}",
            "--model-version",
            "{{ ti.xcom_pull(task_ids='resolve_champion') }}",
            "--k",
            "{{ params.k }}",
        ],
        "Spark mapInPandas: top-K per user with the pinned version -> lake/recommendations/ds.",
    )

    @task(doc_md="Warehouse: replace the day in `recommendations` in one transaction; log `recommendation_runs`.")
    def publish(ds: str | None = None, run_id: str | None = None) -> dict:
        from jobs import publish as job
        from model_lib.config import parse_ds

        return job.run(get_settings(), parse_ds(ds), run_id)

    sessionize >> resolve_champion() >> recommend >> publish()


reco_nightly()
