"""The DAG files parse, wire the steps in data-flow order, carry their docs, form and operating policy, follow the
configuration (missing raw day, training launcher) and stay light at parse time."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from model_lib.config import get_settings
from model_lib.data.state import MANIFEST, state_shape
from model_lib.runtime import QUICK_JIT, class_archive
from model_lib.storage.lake import write_run_stats

DAGS = Path(__file__).resolve().parents[2] / "dags"

PROBE = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(DAGS)!r})

def spark_submit_command(task):
    # The command the operator would run for a run of 2003-02-28; an upstream XComArg (resolved only when the task
    # runs) by its name.
    templates = task.dag.get_template_env()
    task.conf = {{key: templates.from_string(value).render(params={{"full_rebuild": False}}, ds="2003-02-28")
                 for key, value in task.conf.items()}}
    hook = task._get_hook()
    hook._application_args = [a if isinstance(a, str) else f"XComArg({{a.operator.task_id}})"
                              for a in hook._application_args or []]
    return hook._build_spark_submit_command(task.application)

def form_accepts(param, value):
    # What the trigger form's validation (Param.resolve, run by the UI and the API) says of a value.
    try:
        param.resolve(value)
    except Exception:
        return False
    return True

assert not bag.import_errors, bag.import_errors
# What parsing imported (rendering a task's templates below runs task-time code).
heavy = [m for m in ("tensorflow", "keras", "mlflow", "pyspark.sql", "pandas") if m in sys.modules]
out = {{}}
for dag in bag.dags.values():
    out[dag.dag_id] = {{
        "order": [t.task_id for t in dag.topological_sort()],
        "schedule": dag.schedule, "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "tags": sorted(dag.tags), "doc": dag.doc_md,
        "params": {{name: {{**dag.params.get_param(name).schema, "description": dag.params.get_param(name).description}}
                   for name in dag.params}},
        "bounds_enforced": {{name: [form_accepts(dag.params.get_param(name), value) for value in
                                   (0, dag.params.get_param(name).schema["maximum"],
                                    dag.params.get_param(name).schema["maximum"] + 1)]
                            for name in dag.params if "maximum" in dag.params.get_param(name).schema}},
        "tasks": {{t.task_id: {{
            "type": type(t).__name__, "owner": t.owner, "retries": t.retries,
            "backoff": t.retry_exponential_backoff, "timeout": t.execution_timeout.total_seconds(),
            "doc": t.doc_md, "failure_callback": bool(t.on_failure_callback),
            "outlets": [a.name for a in t.outlets], "inlets": [a.name for a in t.inlets],
            "args": [arg if isinstance(arg, str) else f"XComArg({{arg.operator.task_id}})" for arg in
                     getattr(t, "application_args", None) or getattr(t, "arguments", None) or []],
            "soft_fail": getattr(t, "soft_fail", None), "timeout_s": getattr(t, "timeout", None),
            "mode": getattr(t, "mode", None),
            "gpus": getattr(getattr(t, "container_resources", None), "limits", None),
            "spark_submit": spark_submit_command(t) if type(t).__name__ == "SparkSubmitOperator" else None,
        }} for t in dag.tasks}},
    }}
out["heavy"] = heavy
print("PROBE" + json.dumps(out, default=str))
"""


def parse_dags(tmp_path, **settings) -> dict:
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PATH": "/usr/bin:/bin"}
    env["RECO_DATA_DIR"] = str(tmp_path / "data")  # the project's own data/ (a demo's run stats) must not leak in
    env["AIRFLOW_CONN_SPARK_DEFAULT"] = '{"conn_type": "spark", "host": "local[2]"}'

    env.update({f"RECO_{name.upper()}": str(value) for name, value in settings.items()})
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("PROBE"))[5:])


def test_dags_parse_in_data_flow_order_with_docs_forms_and_policies(tmp_path):
    parsed = parse_dags(tmp_path)
    nightly, training = parsed["reco_nightly"], parsed["reco_training"]
    # The champion is resolved before any work: without a registry or a champion nothing is written.
    assert nightly["order"] == [
        "wait_for_raw_events",
        "resolve_champion",
        "sessionize",
        "recommend",
        "publish",
        "retain",
        "report",
    ]
    assert training["order"] == ["wait_for_raw_events", "sessionize", "train", "promote", "report"]
    assert (nightly["schedule"], training["schedule"]) == ("@daily", "@weekly")
    assert parsed["heavy"] == []
    for dag in (nightly, training):
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False and "reco" in dag["tags"]
        assert "**Reads**" in dag["doc"] and "**Writes**" in dag["doc"]
        # The trigger form: every field has a title and a description.
        assert all(schema.get("title") and schema.get("description") for schema in dag["params"].values())
        for task_id, task in dag["tasks"].items():
            # Retries with exponential backoff, a time limit, a description and the failure summary on every task.
            assert task["owner"] == "ml-platform" and task["retries"] >= 2 and task["backoff"] >= 2, task_id
            assert task["timeout"] > 0 and task["doc"] and task["failure_callback"], task_id
    assert set(nightly["params"]) == {"ds", "full_rebuild", "repeat_policy", "k"}
    assert set(training["params"]) == {"ds", "full_rebuild", "repeat_policy", "epochs", "tuned", "auto_promote"}
    assert nightly["params"]["repeat_policy"]["enum"] == [None, "exclude_seen", "allow_repeats"]
    assert nightly["params"]["ds"]["format"] == "date" and nightly["params"]["k"]["maximum"] == 500
    assert nightly["bounds_enforced"]["k"] == [False, True, False]  # K = 0 and K = 501 refused by the form
    assert nightly["tasks"]["sessionize"]["args"] == [
        "--ds",
        "{{ params.ds or ds }}",
        "--mode",
        "{{ 'full' if params.full_rebuild else 'auto' }}",
    ]
    # The form's repeat policy reaches the scoring job (`default`: the settings' own).
    assert nightly["tasks"]["recommend"]["args"][-2:] == ["--repeat-policy", "{{ params.repeat_policy or 'default' }}"]
    # The pinned version reaches recommend as the resolve_champion task's XComArg, not as a template string.
    assert nightly["tasks"]["recommend"]["args"][2:4] == ["--model-version", "XComArg(resolve_champion)"]
    # Lineage: training moves the champion alias, the nightly run reads it and writes the recommendations table.
    assert training["tasks"]["promote"]["outlets"] == ["reco-lstm-attention@champion"]
    assert nightly["tasks"]["resolve_champion"]["inlets"] == ["reco-lstm-attention@champion"]
    assert nightly["tasks"]["publish"]["outlets"] == ["warehouse.recommendations"]
    sensor = nightly["tasks"]["wait_for_raw_events"]
    assert (sensor["mode"], sensor["soft_fail"], sensor["timeout_s"]) == ("reschedule", False, 6 * 3600)
    assert training["tasks"]["train"]["type"] == "_PythonDecoratedOperator"


def test_configuration_chooses_skip_on_a_missing_day_and_the_kubernetes_training_launcher(tmp_path):
    parsed = parse_dags(
        tmp_path, on_missing_raw="skip", raw_wait_minutes=30, training_launcher="kubernetes", training_gpus=2
    )
    sensor = parsed["reco_nightly"]["tasks"]["wait_for_raw_events"]
    assert (sensor["soft_fail"], sensor["timeout_s"]) == (True, 1800)
    train = parsed["reco_training"]["tasks"]["train"]
    assert train["type"] == "KubernetesPodOperator" and train["gpus"] == {"nvidia.com/gpu": "2"}
    assert train["args"][:2] == ["--ds", "{{ params.ds or ds }}"] and "/airflow/xcom/return.json" in train["args"]
    assert train["timeout"] == 12 * 3600 and train["retries"] >= 2


def test_spark_jobs_get_driver_and_executor_memory_on_the_spark_submit_command_line(tmp_path):
    """Set in the session builder, spark.driver.memory comes too late: spark-submit has started the JVM already."""
    parsed = parse_dags(tmp_path, spark_driver_memory="3g", spark_executor_memory="1500m", spark_shuffle_partitions=6)
    for dag_id, task_id in (
        ("reco_nightly", "sessionize"),
        ("reco_nightly", "recommend"),
        ("reco_training", "sessionize"),
    ):
        command = parsed[dag_id]["tasks"][task_id]["spark_submit"]
        pairs = dict(zip(command, command[1:], strict=False))
        assert pairs["--driver-memory"] == "3g" and pairs["--executor-memory"] == "1500m", command
        assert "spark.sql.shuffle.partitions=6" in command and "spark.driver.bindAddress=127.0.0.1" in command
        # The class-data archive make setup recorded (tests/integration/test_spark_class_archive.py checks its use);
        # no state for 2003-02-27 here, so sessionize plans a full rebuild: the JIT's optimizing tier stays on.
        assert f"spark.driver.extraJavaOptions=-XX:SharedArchiveFile={class_archive()}" in command, command


def test_an_incremental_night_gets_a_quick_jit_on_the_spark_submit_command_line(tmp_path):
    """spark-submit starts the JVM before the job plans the night, so the DAG renders the plan's JVM options."""
    settings = get_settings(data_dir=tmp_path / "data")
    manifest = settings.lake.sessionized_dir(dt.date(2003, 2, 27)) / MANIFEST
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"shape": state_shape(settings.sessionize)}))  # a state the night can continue
    parsed = parse_dags(tmp_path, data_dir=tmp_path / "data")
    for dag_id in ("reco_nightly", "reco_training"):
        command = parsed[dag_id]["tasks"]["sessionize"]["spark_submit"]
        assert f"spark.driver.extraJavaOptions=-XX:SharedArchiveFile={class_archive()} {QUICK_JIT}" in command
    # The scoring job's length follows its users, not the day: without a recorded run it keeps the optimizing tier.
    assert QUICK_JIT not in " ".join(parsed["reco_nightly"]["tasks"]["recommend"]["spark_submit"])
    off = parse_dags(tmp_path, data_dir=tmp_path / "data", spark_quick_jit="false")
    assert QUICK_JIT not in " ".join(off["reco_nightly"]["tasks"]["sessionize"]["spark_submit"])


def test_the_recommend_job_gets_a_quick_jit_after_a_short_run(tmp_path):
    """Its JVM options follow the job's latest recorded run at or before the night (jobs/recommend.quick_jit)."""
    settings = get_settings(data_dir=tmp_path / "data")

    def recommend_command(**overrides) -> str:
        parsed = parse_dags(tmp_path, data_dir=tmp_path / "data", **overrides)
        return " ".join(parsed["reco_nightly"]["tasks"]["recommend"]["spark_submit"])

    write_run_stats({"seconds": 7.5}, settings.lake.run_stats_dir("recommend", dt.date(2003, 2, 27)))
    assert QUICK_JIT in recommend_command()
    assert QUICK_JIT not in recommend_command(spark_quick_jit_seconds="5")
    assert QUICK_JIT not in recommend_command(spark_quick_jit="false")
    # A later night's run does not size an earlier night's (a backfill); the latest at or before it does.
    write_run_stats({"seconds": 45.0}, settings.lake.run_stats_dir("recommend", dt.date(2003, 2, 28)))
    write_run_stats({"seconds": 3.0}, settings.lake.run_stats_dir("recommend", dt.date(2003, 3, 1)))
    assert QUICK_JIT not in recommend_command()


FAILING_TASK_PROBE = f"""
import sys, types
sys.path.insert(0, {str(DAGS)!r})
from airflow.sdk._shared.secrets_masker.secrets_masker import redact as airflow_redact
import dag_parts
from model_lib.config import get_settings

settings = get_settings(warehouse_url="postgresql://reco:w4reh0use-pw@db/reco",
                        mlflow_tracking_uri="http://ml:tr4cking-pw@mlflow:5000")
print("REGISTERED", dag_parts.mask_configured_secrets(settings))
print("AIRFLOW", airflow_redact("connecting with w4reh0use-pw and tr4cking-pw and pg-env-pw"))
context = {{
    "ti": types.SimpleNamespace(task_id="publish", try_number=1, max_tries=2),
    "dag": types.SimpleNamespace(dag_id="reco_nightly"),
    "exception": RuntimeError("could not connect: host=db password='s3 cret' sslpassword=k3y"),
    "params": {{"ds": "2003-02-28"}},
}}
dag_parts.report_failure(context)
"""


def test_a_failed_tasks_error_and_airflows_own_logs_mask_the_configured_secrets(tmp_path):
    """The failure callback printed the exception's text as it was, and Airflow's tracebacks of a failed task knew
    none of the configured passwords."""
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PGPASSWORD": "pg-env-pw"}
    out = subprocess.run([sys.executable, "-c", FAILING_TASK_PROBE], capture_output=True, text=True, env=env)
    printed = out.stdout + out.stderr
    assert out.returncode == 0, printed[-3000:]
    assert "REGISTERED ['PGPASSWORD', 'mlflow_tracking_uri', 'warehouse_url']" in printed
    assert "AIRFLOW connecting with *** and *** and ***" in printed
    assert "password='***' sslpassword=***" in printed and "FAILED reco_nightly.publish" in printed
    for secret in ("w4reh0use-pw", "tr4cking-pw", "pg-env-pw", "s3 cret", "k3y"):
        assert secret not in printed.replace("REGISTERED", "")
