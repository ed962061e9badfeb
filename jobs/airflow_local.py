"""The Airflow UI on this machine (`make airflow`, `reco airflow`): API server, scheduler, DAG processor and
triggerer on one metadata database, every one of them reachable only from 127.0.0.1.

Not `airflow standalone`: it also starts the scheduler's and triggerer's log servers, which Airflow binds to every
address (0.0.0.0:8793 / 8794) and standalone cannot turn off. Here they run with `--skip-serve-logs`: task logs are
local files the API server reads itself. The UI requires a login (the simple auth manager; user admin, password in
the generated passwords file). Each component writes its own log under $AIRFLOW_HOME/logs/local/.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from model_lib.config import Settings
from model_lib.progress import say
from model_lib.runtime import apply_engine_environment

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
HOST = "127.0.0.1"


def components(port: int) -> dict[str, list[str]]:
    """The `airflow` commands of a local deployment, by name."""
    return {
        "api-server": ["api-server", "--host", HOST, "--port", str(port)],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }


def environment(port: int, inherited: dict[str, str]) -> dict[str, str]:
    """The variables every component shares. The executor, the passwords file and the engine variables may be set
    by the caller; the addresses may not."""
    defaults = {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        # One secret for this launch: a task's token, issued by the scheduler, must verify at the API server.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
    }
    bound = {
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://{HOST}:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{port}/execution/",
    }
    return {**defaults, **inherited, **bound}


def passwords_file(env: dict[str, str]) -> Path:
    """Where the simple auth manager keeps the users' passwords (it generates them at its first start)."""
    default = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    return Path(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or default)


def serve(settings: Settings, port: int) -> int:
    """Starts every component, reports where the UI is once it answers, and runs until Ctrl-C / SIGTERM or until a
    component dies; then stops all of them. Returns the exit code."""
    apply_engine_environment(settings.engines)
    env = environment(port, dict(os.environ))
    airflow = str(Path(sys.executable).parent / "airflow")
    logs = Path(env["AIRFLOW_HOME"]) / "logs" / "local"
    logs.mkdir(parents=True, exist_ok=True)
    say(f"airflow db migrate (log: {logs / 'db-migrate.log'})")
    with (logs / "db-migrate.log").open("w") as log:
        subprocess.run([airflow, "db", "migrate"], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)

    running: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name, args in components(port).items():
            with (logs / f"{name}.log").open("w") as log:
                running[name] = subprocess.Popen([airflow, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
            say(f"{name}: pid {running[name].pid}, log {logs / f'{name}.log'}")
        url, announced = f"http://{HOST}:{port}", False
        while not stopping:
            died = {name: process.returncode for name, process in running.items() if process.poll() is not None}
            if died:
                say(f"{died} exited; stopping the others (see the logs above)")
                return 1
            if not announced and _healthy(url):
                say(
                    f"Airflow UI: {url}  (DAGs: {env['AIRFLOW__CORE__DAGS_FOLDER']}, examples off)\n"
                    f"[reco] login: admin, password in {passwords_file(env)}\n[reco] Ctrl-C stops every component",
                )
                announced = True
            time.sleep(1)
        return 0
    finally:
        _stop_all(running.values())


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _stop_all(processes) -> None:
    """TERM to each component, up to 30 s for a clean exit, then KILL; each is addressed by its own PID."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 30
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
