"""The DAG files parse, wire the steps in data-flow order and stay light at parse time."""

import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parents[1] / "dags"


def test_dags_parse_with_expected_tasks_and_no_heavy_imports(tmp_path):
    probe = f"""
import sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(DAGS)!r})
assert not bag.import_errors, bag.import_errors
nightly, training = bag.dags["reco_nightly"], bag.dags["reco_training"]
order = lambda dag: [t.task_id for t in dag.topological_sort()]
print(order(nightly)); print(order(training))
print(nightly.schedule, training.schedule)
print(sorted(nightly.params), sorted(training.params), nightly.get_task("sessionize").application_args)
for dag in (nightly, training):
    for t in dag.tasks:
        print("task", t.task_id, t.retries, t.retry_exponential_backoff, bool(t.execution_timeout), bool(t.doc_md))
heavy = [m for m in ("tensorflow", "keras", "mlflow", "pyspark.sql") if m in sys.modules]
print("heavy", heavy)
"""
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tasks = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("task ")]
    assert len(tasks) == 7
    for task_id, retries, backoff, has_timeout, has_doc in tasks:
        # Retries with exponential backoff, a time limit and a description on every task.
        assert int(retries) >= 2 and float(backoff) >= 2 and has_timeout == has_doc == "True", task_id
    lines = [line for line in out.stdout.strip().splitlines() if not line.startswith("task ")][-5:]
    assert lines[0] == "['sessionize', 'resolve_champion', 'recommend', 'publish']"
    assert lines[1] == "['sessionize', 'train', 'promote']"
    assert lines[2] == "@daily @weekly"
    assert lines[3].startswith("['k', 'sessionize_mode'] ['epochs', 'sessionize_mode'] ")
    assert lines[3].endswith("['--ds', '{{ ds }}', '--mode', '{{ params.sessionize_mode }}']")
    assert lines[4] == "heavy []"
