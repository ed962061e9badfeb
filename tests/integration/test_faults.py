"""Real faults: a process killed at the worst moment leaves the previous complete version, and the re-run lands
exactly once; a missing registry or champion stops the nightly scoring before it writes anything."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.processes import free_port, run_ok, start_server, wait_for
from helpers.recommendation_files import DS, write_day
from model_lib.config import get_settings
from model_lib.storage.warehouse import open_warehouse

ROOT = Path(__file__).resolve().parents[2]


def test_a_publish_killed_inside_its_transaction_leaves_the_day_and_the_rerun_publishes_it_once(postgres_url, tmp_path):
    import psycopg

    from helpers.postgres_server import fresh_database

    url = fresh_database(postgres_url, "fault_publish_killed")
    settings = get_settings(data_dir=tmp_path / "data", warehouse_url=url)
    published_v1_then_v2_in_the_lake(settings)

    # Another session holds a lock the publish's DELETE needs, so the publish is caught inside its transaction.
    blocker = psycopg.connect(url)
    blocker.execute("LOCK TABLE recommendations IN SHARE MODE")
    env = {**os.environ, "RECO_DATA_DIR": str(settings.lake.data_dir), "RECO_WAREHOUSE_URL": url, "PGAPPNAME": "killed"}
    killed = subprocess.Popen(
        [sys.executable, "-m", "jobs.publish", "--ds", DS.isoformat(), "--run-id", "run-killed"], env=env, cwd=ROOT
    )

    monitor = psycopg.connect(url, autocommit=True)  # pg_stat_activity is a snapshot per transaction

    def backend(state_filter: str) -> bool:
        row = monitor.execute(
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'killed' AND {state_filter}"
        ).fetchone()
        return row[0] > 0

    wait_for(lambda: backend("wait_event_type = 'Lock' AND query LIKE 'DELETE FROM recommendations%'"), "the DELETE")
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    blocker.rollback()  # releases the lock: the orphaned backend finds its client gone and rolls back
    wait_for(lambda: not backend("true"), "the killed publish's server session to end", timeout=60)
    blocker.close()
    monitor.close()

    warehouse = open_warehouse(url)
    day = warehouse.query("SELECT model_version, count(*) AS n FROM recommendations GROUP BY 1")
    assert day.to_dict("records") == [{"model_version": 1, "n": 6}], "the killed publish changed the day"
    assert warehouse.query("SELECT run_id FROM recommendation_runs")["run_id"].tolist() == ["run-old"]

    again = subprocess.run(
        [sys.executable, "-m", "jobs.publish", "--ds", DS.isoformat(), "--run-id", "run-again"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    day = warehouse.query(
        "SELECT model_version, count(*) AS n, count(DISTINCT (user_id, rank)) AS keys FROM recommendations GROUP BY 1"
    )
    assert day.to_dict("records") == [{"model_version": 2, "n": 9, "keys": 9}]
    runs = warehouse.query("SELECT run_id, status FROM recommendation_runs ORDER BY run_id")
    assert runs.to_dict("records") == [
        {"run_id": "run-again", "status": "success"},
        {"run_id": "run-old", "status": "success"},
    ]


def test_without_a_reachable_registry_or_a_champion_the_nightly_scoring_stops_before_writing(tmp_path, monkeypatch):
    from jobs import recommend
    from model_lib.serving.registry import RegistryUnavailable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # production keeps MLflow's retries
    down = get_settings(data_dir=tmp_path / "down", mlflow_tracking_uri=f"http://user:secret@127.0.0.1:{free_port()}")
    with pytest.raises(RegistryUnavailable, match="cannot be reached") as unreachable:
        recommend.run(down, DS)
    assert "RECO_MLFLOW_TRACKING_URI" in str(unreachable.value) and "secret" not in str(unreachable.value)

    empty = get_settings(data_dir=tmp_path / "empty")
    with pytest.raises(LookupError, match="no `champion` alias .* run reco_training"):
        recommend.run(empty, DS)
    for settings in (down, empty):
        assert (
            not settings.lake.recommendations_dir(DS).exists()
            and not settings.lake.run_stats_dir("recommend", DS).exists()
        )


# Where the same day's re-run is killed: once its sequences are completely written (the old job had committed them
# by then), and once sequences, vocabulary and state users are (the old job had committed two of three).
KILL_POINTS = ("sequences", "state/users/layer=*")


def test_a_sessionize_killed_between_its_outputs_leaves_the_complete_day_and_the_rerun_succeeds(tmp_path):
    from model_lib.data.sequence_files import read_sequences
    from model_lib.runtime import engine_environment

    settings = get_settings(data_dir=tmp_path / "data", min_item_count=1)
    env = {**os.environ, "RECO_DATA_DIR": str(settings.lake.data_dir), "RECO_MIN_ITEM_COUNT": "1"}
    env.update(engine_environment(settings.engines))
    made = run_ok([str(Path(sys.executable).parent / "reco"), "data", "synth", "--users", "400", "--days", "3"], env)
    ds = dt.date.fromisoformat(json.loads(made[0].strip().splitlines()[-1])["last_dt"])
    sessionize = [sys.executable, "-m", "jobs.sessionize", "--ds", ds.isoformat(), "--mode", "full"]
    run_ok(sessionize, env)
    day = settings.lake.sessionized_dir(ds)
    before = folder_digest(day)
    first = read_sequences(settings.lake.sequences_dir(ds))

    for kill_after in KILL_POINTS:
        # The job and its JVM, SIGKILLed once the named output is complete (Spark's _SUCCESS marker) inside the
        # run's staging folder.
        job = start_server(sessionize, env, tmp_path / f"killed-{kill_after.replace('/', '-').strip('*=')}.log")
        deadline = time.time() + 300
        while not list(day.parent.glob(f".tmp-{day.name}.*/{kill_after}/_SUCCESS")) and time.time() < deadline:
            if job.poll() is not None:
                break
            time.sleep(0.01)
        assert job.poll() is None, f"the job ended before {kill_after} was written: nothing was killed"
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
        staged = sorted(day.parent.glob(f".tmp-{day.name}.*"), key=lambda path: path.stat().st_mtime)[-1]
        written = sorted(str(path.relative_to(staged)) for path in staged.glob("*/**/_SUCCESS"))
        print(f"killed after {kill_after}; the staging folder held {written}")
        assert not (staged / "manifest.json").exists()
        assert folder_digest(day) == before, f"a run killed after {kill_after} changed the committed day"
        assert read_sequences(settings.lake.sequences_dir(ds)).items.shape == first.items.shape

    # The re-run succeeds, rebuilds the same day (Spark's file names differ, the content does not) and removes the
    # killed runs' staging folders.
    run_ok(sessionize, env)
    assert not any(day.parent.glob(".tmp-*")) and not any(day.parent.glob(".old-*"))
    assert pd.read_parquet(settings.lake.run_stats_dir("sessionize", ds))["status"].tolist() == ["succeeded"]
    again = read_sequences(settings.lake.sequences_dir(ds))
    assert np.array_equal(again.user_ids, first.user_ids) and np.array_equal(again.items, first.items)


def published_v1_then_v2_in_the_lake(settings) -> None:
    """The day published from model v1 (2 users, 6 rows); the lake then holds v2's lists (3 users, 9 rows)."""
    from jobs import publish

    settings.lake.vocab_dir(DS).mkdir(parents=True)
    vocabulary = pd.DataFrame({"item_id": [f"i{k}" for k in range(10)], "item_index": range(2, 12), "count": 5})
    vocabulary.to_parquet(settings.lake.vocab_dir(DS) / "part-0.parquet")
    write_day(settings.lake.recommendations_dir(DS), ["u1", "u2"], version=1)
    publish.run(settings, DS, "run-old")
    shutil.rmtree(settings.lake.recommendations_dir(DS))
    write_day(settings.lake.recommendations_dir(DS), ["u1", "u2", "u3"], version=2)


def folder_digest(folder: Path) -> str:
    """Content hash of a committed folder (file names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


# Runs a real publish in its own process, stopped after the day's DELETE and INSERT (and the run record) have
# executed inside the transaction, just before COMMIT: it says so, then waits to be killed.
PAUSED_PUBLISH = """
import sys, time
from pathlib import Path
from model_lib.storage import warehouse
from model_lib.config import get_settings, parse_ds

original = warehouse.Warehouse._record_run

def record_then_wait(self, connection, ds, run_id, version, users, rows, coverage, started_at, status):
    original(self, connection, ds, run_id, version, users, rows, coverage, started_at, status)
    if status == "success":
        inserted = self._execute(connection, f"SELECT count(*) FROM {self.recommendations} WHERE ds = ?", [ds])
        print(f"inserted {inserted.fetchone()[0]}, not committed", flush=True)
        time.sleep(600)

warehouse.Warehouse._record_run = record_then_wait
from jobs import publish
publish.run(get_settings(), parse_ds(sys.argv[1]), "run-killed")
"""


def test_a_publish_killed_after_its_insert_before_commit_leaves_the_old_day(warehouse_url, tmp_path):
    from jobs import publish

    settings = get_settings(data_dir=tmp_path / "data", warehouse_url=warehouse_url)
    published_v1_then_v2_in_the_lake(settings)

    env = {**os.environ, "RECO_DATA_DIR": str(settings.lake.data_dir), "RECO_WAREHOUSE_URL": warehouse_url}
    job = subprocess.Popen(
        [sys.executable, "-c", PAUSED_PUBLISH, DS.isoformat()], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    line = job.stdout.readline().strip()
    assert line == "inserted 9, not committed", line  # the new day's rows were in, inside the transaction
    job.send_signal(signal.SIGKILL)
    assert job.wait(timeout=30) == -signal.SIGKILL

    warehouse = open_warehouse(warehouse_url)
    deadline = time.time() + 60  # PostgreSQL ends the orphaned backend's transaction once it notices the client gone
    while time.time() < deadline:
        try:
            day = warehouse.query("SELECT model_version, count(*) AS n FROM recommendations GROUP BY 1")
            break
        except TimeoutError:
            time.sleep(1)
    assert day.to_dict("records") == [{"model_version": 1, "n": 6}], "the killed publish changed the day"
    assert warehouse.query("SELECT run_id FROM recommendation_runs")["run_id"].tolist() == ["run-old"]

    publish.run(settings, DS, "run-again")
    day = warehouse.query(
        "SELECT model_version, count(*) AS n, count(DISTINCT (user_id, rank)) AS keys FROM recommendations GROUP BY 1"
    )
    assert day.to_dict("records") == [{"model_version": 2, "n": 9, "keys": 9}]


def test_a_recommend_rerun_killed_between_its_tables_leaves_the_previous_night_whole(tmp_path, spark):
    """The night's tables were committed one by one, switched-off ones deleted first: a re-run (another K) killed
    between two commits left new extra tables beside old recommendations, and publish accepted them. The night is
    now one folder, committed once."""
    from helpers.sequence_files import register_tiny_model
    from model_lib.data.sequence_files import write_sequences
    from model_lib.data.splits import Sequences
    from model_lib.runtime import engine_environment

    settings = get_settings(data_dir=tmp_path / "data", seq_len=8)
    version, vocabulary = register_tiny_model(settings, event_type_head=True)
    settings.lake.vocab_dir(DS).mkdir(parents=True)
    vocabulary.to_parquet(settings.lake.vocab_dir(DS) / "part-0.parquet", index=False)
    items = np.random.default_rng(4).integers(2, 30, size=(300, 8)).astype(np.int32)
    users = np.array([f"u{u:03d}" for u in range(300)], dtype=object)
    write_sequences(
        Sequences(users, items, np.ones_like(items), np.full_like(items, 3), [np.zeros(0, np.int64)] * 300),
        settings.lake.sequences_dir(DS),
        files=2,
    )
    env = {**os.environ, "RECO_DATA_DIR": str(settings.lake.data_dir), "RECO_SEQ_LEN": "8"}
    env.update(engine_environment(settings.engines))
    recommend = [sys.executable, "-m", "jobs.recommend", "--ds", DS.isoformat(), "--model-version", str(version)]
    run_ok([*recommend, "--k", "5"], env)
    night = settings.lake.nightly_dir(DS)
    before = folder_digest(night)
    tables = sorted(path.name for path in night.iterdir())
    assert len(tables) >= 3, tables

    job = start_server([*recommend, "--k", "7"], env, tmp_path / "killed-recommend.log")
    deadline = time.time() + 300
    while not list(night.parent.glob(f".tmp-{night.name}.*/*/_SUCCESS")) and time.time() < deadline:
        if job.poll() is not None:
            break
        time.sleep(0.005)
    assert job.poll() is None, "the re-run ended before its first table was written: nothing was killed"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=30)
    staged = sorted(night.parent.glob(f".tmp-{night.name}.*"))
    print(f"killed with {sorted(path.parent.name for path in staged[-1].glob('*/_SUCCESS'))} of {tables} written")
    assert folder_digest(night) == before, "the killed re-run changed the committed night"

    run_ok([*recommend, "--k", "7"], env)
    lists = pd.read_parquet(settings.lake.recommendations_dir(DS))
    assert lists.groupby("user_id").size().max() == 7 and sorted(path.name for path in night.iterdir()) == tables
    assert not any(night.parent.glob(".tmp-*"))
