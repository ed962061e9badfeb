"""The UI path, for real: `reco airflow` (what `make airflow` runs) starts the Airflow components on a free loopback
port. The test checks that nothing listens beyond loopback, logs in, reads the DAG pages' data (docs, param form),
unpauses and triggers `reco_nightly` through the REST API v2 exactly as the trigger button does (with params), polls
the run to success, reads its summary and asset event, and checks the warehouse. Every process it starts is stopped
through its own PID."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers.airflow_pipeline import BIN
from helpers.processes import free_port, start_server, stop_server, wait_for

pytestmark = pytest.mark.slow
UI_K = 5


class AirflowApi:
    """A minimal REST API v2 client: JSON in, JSON out, bearer token from the simple auth manager's login."""

    def __init__(self, base_url: str):
        self.base_url, self.token = base_url, None

    def call(self, method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {self.token}"} if self.token else {}),
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: HTTP {error.code} {error.read()[:2000]!r}") from None
        return json.loads(payload) if payload else None

    def login(self, user: str, password: str) -> None:
        self.token = self.call("POST", "/auth/token", {"username": user, "password": password})["access_token"]


@pytest.fixture(scope="module")
def airflow_servers(pipeline, tmp_path_factory):
    """`reco airflow` (what `make airflow` runs: API server, scheduler, DAG processor, triggerer) on a free loopback
    port and the shared pipeline's metadata DB; stopped through its PID's process group after the module."""
    folder = tmp_path_factory.mktemp("airflow-ui")
    port, password = free_port(), secrets.token_urlsafe(12)
    passwords = folder / "passwords.json"
    passwords.write_text(json.dumps({"admin": password}))
    env = {
        **pipeline.env,
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        # Only the runs this test triggers: the daily schedule would otherwise start today's run too.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    launcher = start_server([str(BIN / "reco"), "airflow", "--port", str(port)], env, folder / "reco-airflow.log")
    try:
        api = AirflowApi(f"http://127.0.0.1:{port}")
        wait_for(lambda: api.call("GET", "/api/v2/monitor/health") is not None, "the Airflow API server", 180)
        wait_for(lambda: "Airflow UI: http://127.0.0.1" in (folder / "reco-airflow.log").read_text(), "the banner")
        api.login("admin", password)
        yield api, folder, launcher
    finally:
        stop_server(launcher)
    assert launcher.poll() is not None


def test_every_component_runs_and_listens_on_loopback_only(airflow_servers):
    """Nothing `make airflow` starts can be reached from another machine (no log servers on 0.0.0.0)."""
    import psutil

    api, folder, launcher = airflow_servers
    tree = [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]
    started = dict(re.findall(r"\[reco\] ([a-z-]+): pid (\d+)", (folder / "reco-airflow.log").read_text()))
    assert set(started) == {"api-server", "scheduler", "dag-processor", "triggerer"}, started
    assert {int(pid) for pid in started.values()} <= {process.pid for process in tree if process.is_running()}
    listening = {
        (process.pid, connection.laddr.ip, connection.laddr.port)
        for process in tree
        for connection in process.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    }
    print("listening:", sorted(listening))
    assert listening, "the API server should be listening"
    assert {ip for _, ip, _ in listening} <= {"127.0.0.1", "::1"}, listening


def test_dag_pages_show_docs_and_the_trigger_form(airflow_servers):
    api, folder, _ = airflow_servers
    wait_for(lambda: _dag_parsed(api, "reco_training") and _dag_parsed(api, "reco_nightly"), "both DAGs parsed", 180)
    forms = {
        "reco_nightly": {"ds", "k", "full_rebuild", "repeat_policy"},
        "reco_training": {"ds", "epochs", "auto_promote", "full_rebuild", "repeat_policy", "tuned"},
    }
    for dag_id, form in forms.items():
        details = api.call("GET", f"/api/v2/dags/{dag_id}/details")
        assert details["doc_md"].lstrip().startswith(f"### {dag_id}"), dag_id
        assert "reco" in {tag["name"] for tag in details["tags"]} and details["owners"] == ["ml-platform"]
        assert details["max_active_runs"] == 1 and details["catchup"] is False
        assert set(details["params"]) == form
        # Every field of the trigger form carries a description (the UI shows it under the field).
        assert all(param["description"] for param in details["params"].values()), details["params"]
        tasks = api.call("GET", f"/api/v2/dags/{dag_id}/tasks")["tasks"]
        assert tasks and all(task["doc_md"] for task in tasks), [t["task_id"] for t in tasks if not t["doc_md"]]
        assert all(task["retries"] >= 2 for task in tasks)


def test_trigger_from_the_ui_runs_the_nightly_pipeline(airflow_servers, pipeline):
    from model_lib.storage.warehouse import open_warehouse

    api, folder, _ = airflow_servers
    wait_for(lambda: _dag_parsed(api, "reco_nightly"), "reco_nightly parsed", 180)
    # A day of its own, so the other tests' days stay as they are: the producer committed an empty partition.
    day = pipeline.ds + dt.timedelta(days=5)
    pipeline.settings.lake.raw_events_day_dir(day).mkdir()
    # What the trigger dialog sends: unpause, then a run now, with the form's values as conf.
    api.call("PATCH", "/api/v2/dags/reco_nightly", {"is_paused": False})
    started = time.time()
    run = api.call(
        "POST",
        "/api/v2/dags/reco_nightly/dagRuns",
        {
            "logical_date": dt.datetime.now(dt.UTC).isoformat(),
            "conf": {"ds": day.isoformat(), "k": UI_K, "full_rebuild": True},
            "note": "triggered by the UI-path test",
        },
    )
    run_id = run["dag_run_id"]
    state = _wait_for_run(api, "reco_nightly", run_id, folder, timeout=900)
    print(f"[test] reco_nightly via the scheduler: {state} in {time.time() - started:.0f} s")

    report = api.call(
        "GET", f"/api/v2/dags/reco_nightly/dagRuns/{run_id}/taskInstances/report/xcomEntries/return_value"
    )["value"]
    report = json.loads(report) if isinstance(report, str) else report
    assert report["ds"] == day.isoformat() and report["recommend"]["k"] == UI_K
    assert report["publish"]["rows"] == UI_K * report["publish"]["users"]
    assert report["sessionize"]["mode"] == "full"  # the form's full_rebuild

    query = urllib.parse.urlencode({"source_dag_id": "reco_nightly", "source_run_id": run_id})  # run ids hold "+"
    events = api.call("GET", f"/api/v2/assets/events?{query}")
    extras = [event["extra"] for event in events["asset_events"]]
    assert extras and extras[0]["rows"] == report["publish"]["rows"], events

    # The warehouse holds the day once, at the K of the form, recorded under this Airflow run.
    warehouse = open_warehouse(pipeline.settings.engines.warehouse_url)
    per_user = warehouse.query(
        "SELECT user_id, count(*) AS n FROM recommendations WHERE ds = ? GROUP BY user_id", [day]
    )
    assert len(per_user) == report["publish"]["users"] and set(per_user["n"]) == {UI_K}
    runs = warehouse.query("SELECT run_id, status FROM recommendation_runs WHERE ds = ?", [day])
    assert runs["run_id"].tolist() == [run_id] and runs["status"].tolist() == ["success"]


def _dag_parsed(api: AirflowApi, dag_id: str) -> bool:
    dags = api.call("GET", f"/api/v2/dags?dag_id_pattern={dag_id}")["dags"]
    return any(d["dag_id"] == dag_id for d in dags)


def _wait_for_run(api: AirflowApi, dag_id: str, run_id: str, folder: Path, timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            break
        time.sleep(5)
    instances = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    states = {ti["task_id"]: ti["state"] for ti in instances}
    assert state == "success", f"run {run_id} ended {state}: {states}; logs in {folder}\n" + _failed_logs(
        api, dag_id, run_id, instances
    )
    return state


def _failed_logs(api: AirflowApi, dag_id: str, run_id: str, instances: list[dict]) -> str:
    out = []
    for ti in instances:
        if ti["state"] not in ("success", "skipped") and ti["try_number"]:
            path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
            try:
                content = api.call("GET", path)["content"]
                out.append(f"--- {ti['task_id']} ---\n" + json.dumps(content)[-3000:])
            except AssertionError as error:
                out.append(f"--- {ti['task_id']}: {error}")
    return "\n".join(out)
