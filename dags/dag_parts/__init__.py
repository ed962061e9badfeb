"""Pieces both DAG files share: arguments, the trigger form, the raw-partition sensor, assets, task factories and
the run summaries.

Imported at DAG-parse time, so it stays light: Airflow, the Spark provider and the settings only; TensorFlow,
PySpark, MLflow and pandas are imported inside the tasks (the Kubernetes provider only when it is configured).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, task

from model_lib.config import PROJECT_ROOT, REPEAT_POLICIES, OrchestrationSettings, Settings, get_settings
from model_lib.progress import say
from model_lib.redaction import redact, split_credentials
from model_lib.runtime import driver_java_options

JOBS = PROJECT_ROOT / "jobs"
# Every task works on one calendar day: the `ds` param when the trigger form sets it, else the logical date.
DS = "{{ params.ds or ds }}"
TRAIN_TIMEOUT = timedelta(hours=12)  # training a big catalogue takes hours (ML-1M at L = 200: ~1 h on 2 cores)


def run_ds(params: dict | None, ds: str | None) -> str:
    """The day a task works on, as YYYY-MM-DD (Python tasks' twin of the DS template)."""
    from model_lib.config import parse_ds

    chosen = (params or {}).get("ds") or ds
    if not chosen:
        raise ValueError("this run has no logical date: set the `ds` parameter in the trigger form")
    return parse_ds(chosen).isoformat()


def report_failure(context) -> None:
    """on_failure_callback: step, ds, error and the run's counts so far, in a few lines of the task log."""
    _report_error(context, "FAILED")


def report_retry(context) -> None:
    """on_retry_callback: the same summary for a try that Airflow will retry."""
    _report_error(context, "FAILED, will retry:")


def _report_error(context, verdict: str) -> None:
    ti, dag = context["ti"], context["dag"]
    error = context.get("exception")
    # An exception's text may quote a connection string (a driver's error, a failed command line): masked first.
    message = redact(str(error).strip().splitlines()[0])[:500] if error and str(error).strip() else ""
    day = (context.get("params") or {}).get("ds") or context.get("ds")
    lines = [
        f"{verdict} {dag.dag_id}.{ti.task_id} ds={day} (try {ti.try_number} of {ti.max_tries + 1})",
        f"  error: {type(error).__name__}: {message}",
    ]
    try:
        from model_lib.run_report import summary_lines

        done = _collect(context)
        lines += ["  counts so far:"] + [f"    {line}" for line in summary_lines(done)] if done else ["  no counts yet"]
    except Exception as collect_error:  # noqa: BLE001 - the summary must never hide the task's own error
        lines.append(f"  (counts unavailable: {redact(collect_error)})")
    for line in lines:
        say(line)


# The sessionize mode the trigger form asks for, as a Jinja expression: the job's --mode and its JVM options use it.
SESSIONIZE_MODE = "'full' if params.full_rebuild else 'auto'"


def sessionize_java_options(params: dict | None, ds: str | None, mode: str) -> str:
    """A template macro, rendered when the sessionize task starts: the JVM options of the night the job will plan
    (jobs/sessionize.night_java_options). spark-submit starts the JVM, so they cannot wait for the job."""
    from jobs.sessionize import night_java_options
    from model_lib.config import get_settings, parse_ds

    return night_java_options(get_settings(), parse_ds(run_ds(params, ds)), mode)


def recommend_java_options(params: dict | None, ds: str | None) -> str:
    """A template macro, rendered when the recommend task starts: its JVM options, sized by the job's last run
    (jobs/recommend.night_java_options)."""
    from jobs.recommend import night_java_options
    from model_lib.config import get_settings, parse_ds

    return night_java_options(get_settings(), parse_ds(run_ds(params, ds)))


def mask_configured_secrets(settings: Settings) -> list[str]:
    """Registers the passwords the settings' URLs and the process environment hold with Airflow's secrets masker, so
    every line a task writes — Airflow's own tracebacks of a failed task included — shows *** instead. Returns the
    names of what was registered (never the values)."""
    from airflow.sdk.log import mask_secret

    found = {
        name: split_credentials(url)[2]
        for name, url in (
            ("warehouse_url", settings.engines.warehouse_url),
            ("mlflow_tracking_uri", settings.engines.mlflow_tracking_uri),
        )
        if url
    }
    found.update({name: os.environ.get(name) for name in ("PGPASSWORD", "MLFLOW_TRACKING_PASSWORD")})
    registered = sorted(name for name, secret in found.items() if secret)
    for name in registered:
        mask_secret(found[name])  # unnamed: a name masks only when Airflow deems it sensitive (`warehouse_url` is not)
    return registered


COMMON_DAG_ARGS = {
    "start_date": pendulum.datetime(2000, 1, 1, tz="UTC"),
    # New days run on schedule; past date ranges are backfills (UI "Backfill", or `airflow backfill create`),
    # which run every day of the range whatever catchup says, oldest first, one at a time (max_active_runs).
    "catchup": False,
    "max_active_runs": 1,
    "user_defined_macros": {
        "sessionize_java_options": sessionize_java_options,
        "recommend_java_options": recommend_java_options,
    },
    # Every task is an idempotent function of ds, so retrying is safe: 1, 2, 4 ... minutes apart, at most 30.
    "default_args": {
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": report_failure,
        "on_retry_callback": report_retry,
    },
}

COMMON_PARAMS = {
    "ds": Param(
        None,
        type=["null", "string"],
        format="date",
        title="Day (ds)",
        description="The day to run, YYYY-MM-DD. Empty: the run's logical date. Set it to re-run or catch up one "
        "day from the trigger form; a re-run replaces that day's outputs.",
    ),
    "full_rebuild": Param(
        False,
        type="boolean",
        title="Full rebuild",
        description="Re-read every raw day up to ds instead of continuing yesterday's state (after a changed "
        "sequence length or validation rule, or to repair the state). Slower; the result is the same.",
    ),
    "repeat_policy": Param(
        None,
        type=["null", "string"],
        enum=[None, *REPEAT_POLICIES],
        title="Repeat policy",
        description="What may be recommended: exclude_seen (never an item the user has an event on: movies, books) "
        "or allow_repeats (seen items stay candidates: grocery, music, re-orders). Training, the gate's metrics "
        "and the nightly lists all use it. Empty: RECO_REPEAT_POLICY.",
    ),
}


def settings_overrides(params: dict | None) -> dict:
    """The trigger form's fields that override settings in the Python tasks (empty fields keep the settings)."""
    params = params or {}
    return {key: params[key] for key in ("epochs", "repeat_policy", "tuned") if params.get(key)}


def champion_asset(settings: Settings) -> Asset:
    """The registry alias the training DAG moves and the nightly DAG reads."""
    return Asset(
        name=f"{settings.model.model_name}@champion",
        uri=f"x-mlflow://models/{settings.model.model_name}/champion",
        group="model",
    )


RECOMMENDATIONS_ASSET = Asset(name="warehouse.recommendations", uri="x-warehouse://recommendations", group="table")


def spark_job(task_id: str, args: list, doc_md: str, java_options: str | None = None) -> SparkSubmitOperator:
    """`spark-submit jobs/<task_id>.py ARGS` on the `spark_default` connection (local[2] unless configured).

    Driver and executor memory, the driver's addresses and its JVM options (the class-data archive of make setup)
    go on the spark-submit command line: set inside the job they would come too late for the JVM spark-submit has
    already started. An argument may be an upstream task's XComArg: Airflow resolves it when the task runs and
    makes that task upstream. `java_options`: the driver JVM's options when they depend on the run (a template),
    else those of runtime.driver_java_options."""
    settings = get_settings()
    java_options = java_options if java_options is not None else driver_java_options()
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(JOBS / f"{task_id}.py"),
        application_args=args,
        conn_id="spark_default",
        name=f"reco-{task_id}-{DS}",
        driver_memory=settings.engines.spark_driver_memory,
        executor_memory=settings.engines.spark_executor_memory,
        conf={
            "spark.driver.host": settings.engines.spark_driver_host,
            "spark.driver.bindAddress": settings.engines.spark_bind_address,
            "spark.sql.shuffle.partitions": str(settings.engines.spark_shuffle_partitions),
            **({"spark.driver.extraJavaOptions": java_options} if java_options else {}),
        },
        doc_md=doc_md,
    )


def raw_events_sensor(waiting: OrchestrationSettings):
    """Waits for lake/raw/events/dt=ds; after raw_wait_minutes the run is skipped or failed (on_missing_raw)."""
    outcome = "skips the run" if waiting.on_missing_raw == "skip" else "fails the run"

    @task.sensor(
        poke_interval=waiting.raw_poke_seconds,
        timeout=waiting.raw_wait_minutes * 60,
        # Frees the worker slot between looks; a producer that is hours late must not block the other DAG.
        mode="reschedule",
        soft_fail=waiting.on_missing_raw == "skip",
        doc_md=f"Waits for the raw partition `lake/raw/events/dt=ds`, looking every {waiting.raw_poke_seconds:g} s. "
        f"After {waiting.raw_wait_minutes:g} min without it, {outcome} (RECO_RAW_WAIT_MINUTES, RECO_ON_MISSING_RAW).",
    )
    def wait_for_raw_events(params: dict | None = None, ds: str | None = None) -> bool:
        from model_lib.config import get_settings, parse_ds

        folder = get_settings().lake.raw_events_day_dir(parse_ds(run_ds(params, ds)))
        present = folder.is_dir()
        say(
            f"raw partition {folder}: "
            + ("present" if present else f"not there yet; after {waiting.raw_wait_minutes:g} min this {outcome}"),
        )
        return present

    return wait_for_raw_events()


def sessionize_task() -> SparkSubmitOperator:
    return spark_job(
        "sessionize",
        ["--ds", DS, "--mode", f"{{{{ {SESSIONIZE_MODE} }}}}"],
        "Spark: the day's raw events + yesterday's state (or every raw day, in a full rebuild) -> "
        "lake/sessionized/ds (sequences, vocabulary and state, committed as one unit); rejects to "
        "lake/quarantine/events/dt=; counts to "
        "lake/run_stats/sessionize.",
        java_options=f"{{{{ sessionize_java_options(params, ds, {SESSIONIZE_MODE}) }}}}",
    )


def training_task(settings: Settings):
    """`train`: in the Airflow worker (training_launcher=local) or as a GPU pod on Kubernetes (=kubernetes).

    Either way it runs the same `jobs/train.py` and hands the same summary (version, metrics) to `promote`.
    """
    doc_md = (
        "TensorFlow: train on lake/sequences/ds (resuming from its epoch checkpoints on a retry), log the run to "
        "MLflow, register a `challenger` version. Launcher: "
        + (
            "a Kubernetes pod with GPUs."
            if settings.orchestration.training_launcher == "kubernetes"
            else "this worker."
        )
    )
    if settings.orchestration.training_launcher == "kubernetes":
        return _training_pod(settings, doc_md).output

    @task(execution_timeout=TRAIN_TIMEOUT, doc_md=doc_md)
    def train(params: dict | None = None, ds: str | None = None) -> dict:
        from jobs import train as job
        from model_lib.config import get_settings, parse_ds

        return job.run(get_settings(**settings_overrides(params)), parse_ds(run_ds(params, ds)))

    return train()


def _training_pod(settings: Settings, doc_md: str):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    gpus = {"nvidia.com/gpu": str(settings.orchestration.training_gpus)} if settings.orchestration.training_gpus else {}
    return KubernetesPodOperator(
        task_id="train",
        name="reco-train",
        namespace=settings.orchestration.training_namespace,
        image=settings.orchestration.training_image,
        cmds=["reco", "train"],
        # The summary file is what the pod's XCom sidecar hands to `promote`.
        arguments=["--ds", DS, "--epochs", "{{ params.epochs or 0 }}", "--result-file", "/airflow/xcom/return.json"],
        # The pod's settings come from its secret; a repeat policy chosen in the form goes in as a variable.
        env_vars={
            "RECO_REPEAT_POLICY": "{{ params.repeat_policy or '' }}",
            "RECO_TUNED": "{{ params.tuned or '' }}",
        },
        env_from=[
            k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.orchestration.training_env_secret))
        ],
        container_resources=k8s.V1ResourceRequirements(requests={"cpu": "4", "memory": "16Gi"}, limits=gpus),
        # The lake, checkpoints and MLflow artifacts are on a shared volume mounted at the same path everywhere.
        volumes=[
            k8s.V1Volume(
                name="reco-data",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=settings.orchestration.training_data_claim
                ),
            )
        ],
        volume_mounts=[k8s.V1VolumeMount(name="reco-data", mount_path=str(settings.lake.data_dir))],
        do_xcom_push=True,
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        execution_timeout=TRAIN_TIMEOUT,
        doc_md=doc_md,
    )


def report_task():
    """The run's last task: counts and seconds per step, printed and returned (the UI shows it as XCom)."""

    @task(doc_md="Summary of this run (counts and seconds per step), from lake/run_stats and the steps' XComs.")
    def report(**context) -> dict:
        from model_lib.run_report import summary_lines

        done = _collect(context)
        for line in summary_lines(done):
            say(f"run summary: {line}")
        return {"ds": run_ds(context.get("params"), context.get("ds")), **done}

    return report()


def _collect(context) -> dict:
    """This run's counts so far, per step in the DAG's order (steps without a result yet are left out)."""
    from model_lib.config import get_settings, parse_ds
    from model_lib.run_report import collect

    ti, day = context["ti"], parse_ds(run_ds(context.get("params"), context.get("ds")))
    steps = tuple(task.task_id for task in context["dag"].topological_sort())
    started = getattr(context.get("dag_run"), "start_date", None)
    return collect(get_settings(), day, steps, lambda step: ti.xcom_pull(task_ids=step), started)
