"""
### reco_nightly — wait for raw events -> resolve champion -> sessionize -> recommend -> publish -> report

Every day: waits for the day's raw partition, pins the `champion` model version once, merges the day's events into
the users' sequences (incrementally, from yesterday's state), scores every user with history in one pass (top-K
items, each with its reason; with a multi-behaviour champion, the chance of each next event type; each user's
vector and segment; how surprising the day's events were), and publishes the day into the warehouse tables
`recommendations`, `user_next_behaviour`, `user_profiles`, `user_segments` and `user_anomalies` (plus
`recommendation_runs`, `published_tables`) in one transaction. A re-run replaces the day, never duplicates it.

**Reads** `lake/raw/events/dt=ds`, yesterday's `lake/sessionized/ds=ds-1` (state), the MLflow alias `champion`.
**Writes** `lake/sessionized/ds=ds` (sequences, vocab, state: one unit), `lake/nightly/ds=ds`
(recommendations, user_next_behaviour, user_profiles, user_segments, user_anomalies: one unit),
`lake/run_stats/*/ds=ds`, and the warehouse.

**Operate**: *Trigger* with the form to run one day (`ds`), with another K, or as a full rebuild. *Backfill* a
date range from the DAG page (or `airflow backfill create --dag-id reco_nightly --from-date ... --to-date ...`):
the days run oldest first, one at a time, each continuing the previous day's state. The `report` task's XCom is
the run's summary (counts and seconds per step); a failing task logs a `[reco] FAILED` summary.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from dag_parts import (
    COMMON_DAG_ARGS,
    COMMON_PARAMS,
    DS,
    RECOMMENDATIONS_ASSET,
    champion_asset,
    mask_configured_secrets,
    raw_events_sensor,
    report_task,
    run_ds,
    sessionize_task,
    spark_job,
)
from model_lib.config import MAX_TOP_K, get_settings
from model_lib.progress import say

settings = get_settings()
mask_configured_secrets(settings)  # parsed again in every task process, so its logs mask them too


RECOMMEND_DOC = (
    "Spark mapInPandas: reads lake/sessionized/ds/sequences and the pinned model version; writes the night's tables "
    "(top-K per user, next-event-type probabilities, profiles, segments, anomalies; one scoring pass) to "
    "lake/nightly/ds as one unit, and counts to lake/run_stats/recommend. Refuses, before scoring, a model trained "
    "on other items or event types (RECO_RECOMMEND_MIN_KNOWN_SHARE)."
)


@dag(
    dag_id="reco_nightly",
    schedule="@daily",
    tags=["reco", "nightly", "spark", "warehouse"],
    doc_md=__doc__,
    **COMMON_DAG_ARGS,
    params={
        **COMMON_PARAMS,
        "k": Param(
            settings.serving.top_k,
            type="integer",
            minimum=1,
            maximum=MAX_TOP_K,
            title="K",
            description=f"Recommendations per user written for the day (1 to {MAX_TOP_K}).",
        ),
    },
)
def reco_nightly():
    @task(
        inlets=[champion_asset(settings)],
        doc_md="Reads the MLflow alias `champion` once and returns its version; every later task uses that version, "
        "so a promotion during the run cannot mix two models in one day. Runs first: without a reachable registry "
        "and a champion, the run fails before it writes anything.",
    )
    def resolve_champion() -> str:
        from model_lib.serving import registry

        settings = get_settings()
        version = registry.champion_version(settings)
        say(f"this run uses {settings.model.model_name} v{version}")
        return str(version)  # a command-line argument of recommend (MLflow's versions are strings too)

    version = resolve_champion()
    recommend = spark_job(
        "recommend",
        [
            "--ds",
            DS,
            "--model-version",
            version,
            "--k",
            "{{ params.k }}",
            "--repeat-policy",
            "{{ params.repeat_policy or 'default' }}",
        ],
        RECOMMEND_DOC,
        java_options="{{ recommend_java_options(params, ds) }}",
    )

    @task(
        outlets=[RECOMMENDATIONS_ASSET],
        doc_md="Reads one committed lake/nightly/ds (every nightly table); replaces the day in the warehouse tables "
        "`recommendations`, `user_next_behaviour`, `user_profiles`, `user_segments` and `user_anomalies` in one "
        "transaction and records it in `recommendation_runs` and `published_tables` (with this Airflow run id).",
    )
    def publish(params: dict | None = None, ds: str | None = None, run_id: str | None = None, outlet_events=None):
        from jobs import publish as job
        from model_lib.config import parse_ds

        summary = job.run(get_settings(), parse_ds(run_ds(params, ds)), run_id)
        outlet_events[RECOMMENDATIONS_ASSET].extra = summary
        return summary

    @task(
        doc_md="Retention: removes the derived days beyond RECO_KEEP_SESSIONIZED_DAYS, RECO_KEEP_QUARANTINE_DAYS and "
        "RECO_KEEP_NIGHTLY_DAYS, and the warehouse rows older than RECO_KEEP_WAREHOUSE_DAYS; never the newest day, "
        "the day before ds, or the training day of an aliased model version (jobs/retain.py).",
    )
    def retain(params: dict | None = None, ds: str | None = None):
        from jobs import retain as job
        from model_lib.config import parse_ds

        return job.run(get_settings(), parse_ds(run_ds(params, ds)))

    chain = raw_events_sensor(settings.orchestration) >> version >> sessionize_task() >> recommend >> publish()
    chain >> retain() >> report_task()


reco_nightly()
