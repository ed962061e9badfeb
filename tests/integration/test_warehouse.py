"""Publishing a day into a real DuckDB file and a real PostgreSQL server: atomic, idempotent, and a failed publish
leaves the old day (and is recorded)."""

import datetime as dt
import subprocess
import sys
import threading
import time

import pytest

from helpers.recommendation_files import DS, write_day, write_next_behaviour
from model_lib.storage.warehouse import open_warehouse

STARTED = dt.datetime(2024, 1, 11)


def test_republishing_a_day_replaces_it(warehouse_url, tmp_path):
    warehouse = open_warehouse(warehouse_url)
    write_day(tmp_path / "day", ["u1", "u2"], files=2)
    first = warehouse.publish(DS, tmp_path / "day", "run-1", catalogue_items=10, started_at=STARTED)
    second = warehouse.publish(DS, tmp_path / "day", "run-2", catalogue_items=10, started_at=STARTED)
    assert first["rows"] == second["rows"] == 6
    counts = warehouse.query("SELECT count(*) AS n, count(DISTINCT (user_id, rank)) AS keys FROM recommendations")
    assert counts["n"][0] == counts["keys"][0] == 6
    runs = warehouse.query("SELECT run_id, users, rows, coverage, status FROM recommendation_runs ORDER BY run_id")
    assert runs.to_dict("records") == [
        {"run_id": "run-1", "users": 2, "rows": 6, "coverage": 0.3, "status": "success"},
        {"run_id": "run-2", "users": 2, "rows": 6, "coverage": 0.3, "status": "success"},
    ]
    # NULL reasons survive the bulk load as NULL, not as empty strings.
    reasons = warehouse.query("SELECT count(*) AS n FROM recommendations WHERE reason_item_id IS NULL")
    assert reasons["n"][0] == 2


def test_every_nightly_table_of_a_day_is_replaced_in_one_transaction_from_one_model_version(warehouse_url, tmp_path):
    warehouse = open_warehouse(warehouse_url)
    write_day(tmp_path / "v1", ["u1", "u2"])
    write_next_behaviour(tmp_path / "v1-next", ["u1", "u2"])
    first = warehouse.publish(DS, tmp_path / "v1", "run-1", 10, STARTED, {"user_next_behaviour": tmp_path / "v1-next"})
    assert first["tables"] == {"recommendations": 6, "user_next_behaviour": 4}

    def day() -> dict:
        return {
            table: warehouse.query(f"SELECT count(*) AS n, max(model_version) AS v FROM {table}").iloc[0].tolist()
            for table in ("recommendations", "user_next_behaviour")
        }

    # Another table from another version: refused before anything changes.
    write_day(tmp_path / "v2", ["u1"], version=2)
    with pytest.raises(ValueError, match="mixes 2 model versions"):
        warehouse.publish(DS, tmp_path / "v2", "run-2", 10, STARTED, {"user_next_behaviour": tmp_path / "v1-next"})
    assert day() == {"recommendations": [6, 1], "user_next_behaviour": [4, 1]}
    # A run whose champion has no event-type head: its day has no next-behaviour rows, not version 1's.
    second = warehouse.publish(DS, tmp_path / "v2", "run-3", 10, STARTED)
    assert second["tables"] == {"recommendations": 3}
    assert day() == {"recommendations": [3, 2], "user_next_behaviour": [0, None]}
    published = warehouse.query("SELECT run_id, table_name, rows, model_version FROM published_tables ORDER BY 1, 2")
    assert published.values.tolist() == [
        ["run-1", "recommendations", 6, 1],
        ["run-1", "user_next_behaviour", 4, 1],
        ["run-3", "recommendations", 3, 2],
    ]
    with pytest.raises(ValueError, match="not nightly tables"):
        warehouse.publish(DS, tmp_path / "v2", "run-4", 10, STARTED, {"user_secrets": tmp_path / "v2"})


def test_a_failed_publish_leaves_the_previous_day_and_is_recorded(warehouse_url, tmp_path):
    warehouse = open_warehouse(warehouse_url)
    write_day(tmp_path / "good", ["u1"])
    warehouse.publish(DS, tmp_path / "good", "run-1", 10, STARTED)
    write_day(tmp_path / "wrong_day", ["u1", "u2", "u3"], ds=DS + dt.timedelta(days=1))
    with pytest.raises(ValueError, match="not for ds"):
        warehouse.publish(DS, tmp_path / "wrong_day", "run-2", 10, STARTED)
    write_day(tmp_path / "mixed", ["u1", "u2"], version=1)
    write_day(tmp_path / "mixed_v2", ["u3"], version=2)
    (tmp_path / "mixed_v2" / "part-0.parquet").rename(tmp_path / "mixed" / "part-1.parquet")
    with pytest.raises(ValueError, match="mixes 2 model versions"):
        warehouse.publish(DS, tmp_path / "mixed", "run-3", 10, STARTED)
    day = warehouse.query("SELECT user_id, count(*) AS n FROM recommendations GROUP BY 1")
    assert day.to_dict("records") == [{"user_id": "u1", "n": 3}]
    runs = warehouse.query("SELECT run_id, status, model_version FROM recommendation_runs ORDER BY run_id")
    assert runs["status"].tolist() == ["success", "failed", "failed"]
    assert warehouse.last_run(DS)["run_id"] == "run-3"


def test_other_days_are_not_touched(warehouse_url, tmp_path):
    warehouse = open_warehouse(warehouse_url)
    write_day(tmp_path / "d1", ["u1"])
    write_day(tmp_path / "d2", ["u1", "u2"], ds=DS + dt.timedelta(days=1))
    warehouse.publish(DS, tmp_path / "d1", "r1", 10, STARTED)
    warehouse.publish(DS + dt.timedelta(days=1), tmp_path / "d2", "r2", 10, STARTED)
    warehouse.publish(DS, tmp_path / "d1", "r3", 10, STARTED)
    per_day = warehouse.query(
        "SELECT CAST(ds AS VARCHAR) AS ds, count(*) AS n FROM recommendations GROUP BY 1 ORDER BY 1"
    )
    assert per_day.to_dict("records") == [{"ds": "2024-01-10", "n": 3}, {"ds": "2024-01-11", "n": 6}]
    assert warehouse.latest_ds() == DS + dt.timedelta(days=1)
    assert warehouse.some_users(DS + dt.timedelta(days=1), 5) == ["u1", "u2"]
    assert warehouse.user_recommendations("u2", DS + dt.timedelta(days=1), max_rank=2)["rank"].tolist() == [1, 2]


def test_readers_see_the_old_day_or_the_new_day_never_a_mix(postgres_url, tmp_path):
    from helpers.postgres_server import fresh_database

    warehouse = open_warehouse(fresh_database(postgres_url, "readers"))
    write_day(tmp_path / "old", [f"u{i}" for i in range(100)], version=1, k=20)
    warehouse.publish(DS, tmp_path / "old", "old", 10, STARTED)
    write_day(tmp_path / "new", [f"u{i}" for i in range(5000)], version=2, k=20, files=4)
    seen: set[tuple[int, int]] = set()
    publishing = threading.Thread(target=warehouse.publish, args=(DS, tmp_path / "new", "new", 10, STARTED))
    publishing.start()
    while publishing.is_alive():
        day = warehouse.query(
            "SELECT count(*) AS n, min(model_version) AS lo, max(model_version) AS hi FROM recommendations "
            "WHERE ds = ?",
            [DS],
        )
        n, lo, hi = int(day["n"][0]), int(day["lo"][0]), int(day["hi"][0])
        assert lo == hi, "a reader saw two model versions in one day"
        seen.add((n, lo))
    publishing.join()
    assert seen <= {(2000, 1), (100_000, 2)}
    assert (2000, 1) in seen, "the reader never ran during the publish"
    final = warehouse.query("SELECT count(*) AS n FROM recommendations WHERE ds = ?", [DS])
    assert final["n"][0] == 100_000


def test_unknown_warehouse_scheme_is_rejected():
    with pytest.raises(ValueError, match="unsupported warehouse"):
        open_warehouse("mysql://127.0.0.1/x")


def test_a_duckdb_file_in_use_by_another_process_is_waited_for_then_given_up_on(tmp_path):
    """DuckDB lets one process write a file at a time: two backfill runs publishing different days take turns
    instead of failing, and a file held for longer than the wait gives a message that says what to do."""
    path = tmp_path / "warehouse.duckdb"
    warehouse = open_warehouse(f"duckdb:///{path}")
    write_day(tmp_path / "day", ["u1", "u2"])
    warehouse.publish(DS, tmp_path / "day", "run-0", catalogue_items=10, started_at=STARTED)
    write_day(tmp_path / "next", ["u1", "u2"], ds=DS + dt.timedelta(days=1))
    hold = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
        "time.sleep(float(sys.argv[2]))"
    )

    holder = subprocess.Popen([sys.executable, "-c", hold, str(path), "4"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    published = warehouse.publish(DS + dt.timedelta(days=1), tmp_path / "next", "run-1", 10, STARTED)
    waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert published["rows"] == 6 and waited > 1, waited
    days = warehouse.query("SELECT CAST(ds AS VARCHAR) AS ds, count(*) AS n FROM recommendations GROUP BY 1 ORDER BY 1")
    assert days.to_dict("records") == [{"ds": "2024-01-10", "n": 6}, {"ds": "2024-01-11", "n": 6}]

    holder = subprocess.Popen([sys.executable, "-c", hold, str(path), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        warehouse.lock_wait_seconds = 2
        with pytest.raises(TimeoutError, match=rf"in use by .*\(PID {holder.pid}\) for \d+ s: close that session"):
            warehouse.publish(DS, tmp_path / "day", "run-2", 10, STARTED)
    finally:
        holder.kill()
        holder.wait()
    assert warehouse.query("SELECT count(*) AS n FROM recommendations")["n"][0] == 12


def test_readers_open_read_only_and_never_run_ddl(warehouse_url, tmp_path, postgres_url):
    """`reco show` and the summary read: nothing published yet is a clear message (and creates nothing); a
    read-only PostgreSQL role can read; a DuckDB reader works beside another process's read-only session."""
    warehouse = open_warehouse(warehouse_url)
    with pytest.raises(LookupError, match="run reco_nightly"):
        warehouse.latest_ds()
    if warehouse_url.startswith("duckdb"):
        assert not warehouse.path.exists(), "a reader created the warehouse file"
    write_day(tmp_path / "day", ["u1", "u2"])
    warehouse.publish(DS, tmp_path / "day", "run-1", catalogue_items=10, started_at=STARTED)

    if warehouse_url.startswith("postgresql"):
        import psycopg

        role = f"reader_{abs(hash(warehouse_url)) % 10**8}"
        with psycopg.connect(warehouse_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")
            admin.execute(f"CREATE ROLE {role} LOGIN")
            admin.execute(f"GRANT SELECT ON recommendations, recommendation_runs TO {role}")
        reader = open_warehouse(warehouse_url.replace("postgresql://reco@", f"postgresql://{role}@", 1))
        assert reader.latest_ds() == DS
        assert reader.user_recommendations("u1", DS)["rank"].tolist() == [1, 2, 3]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # readers cannot write, even by mistake
            open_warehouse(warehouse_url).query("DELETE FROM recommendations")
        return

    hold = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); print('held', flush=True); "
        "time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(warehouse.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        warehouse.lock_wait_seconds = 3
        started = time.monotonic()
        assert warehouse.latest_ds() == DS and warehouse.last_run(DS)["rows"] == 6
        assert time.monotonic() - started < 2, "the reader waited for another reader"
    finally:
        holder.kill()
        holder.wait()


def test_two_publishes_of_the_same_day_on_postgresql_serialise_and_the_second_replaces(postgres_url, tmp_path):
    """Both are held at the start of their transactions until a blocking session lets go; the second then waits
    for the first (an advisory lock on the day) and replaces its rows instead of failing on the primary key."""
    import psycopg

    from helpers.postgres_server import fresh_database

    url = fresh_database(postgres_url, "serialised_publishes")
    warehouse = open_warehouse(url)
    write_day(tmp_path / "old", ["u0"])
    warehouse.publish(DS, tmp_path / "old", "run-0", 10, STARTED)
    write_day(tmp_path / "first", ["u1", "u2"], version=1)
    write_day(tmp_path / "second", ["u1", "u2", "u3"], version=2)

    # Another session holds the day's rows (as a long reader with FOR UPDATE would): both publishes start and wait.
    blocker = psycopg.connect(url)
    blocker.execute("SELECT 1 FROM recommendations WHERE ds = %s FOR UPDATE", [DS])
    results, errors = {}, {}

    def publish(name: str) -> None:
        try:
            results[name] = open_warehouse(url).publish(DS, tmp_path / name, f"run-{name}", 10, STARTED)
        except Exception as error:  # noqa: BLE001 - reported below
            errors[name] = error

    monitor = psycopg.connect(url, autocommit=True)

    def waits() -> list[str]:
        rows = monitor.execute("SELECT wait_event FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchall()
        return sorted(row[0] for row in rows)

    deadline = time.time() + 60
    first = threading.Thread(target=publish, args=("first",))
    first.start()
    while len(waits()) < 1 and time.time() < deadline:
        time.sleep(0.1)
    second = threading.Thread(target=publish, args=("second",))
    second.start()
    while len(waits()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    overlapped = waits()
    blocker.rollback()
    blocker.close()
    first.join(60)
    second.join(60)
    monitor.close()

    assert len(overlapped) == 2, f"the two publishes did not overlap: {overlapped}"
    assert not errors, errors  # without the day lock the second fails: duplicate key (ds, user_id, rank)
    assert "advisory" in overlapped, f"the second publish should wait on the day's advisory lock: {overlapped}"
    day = warehouse.query("SELECT model_version, count(*) AS n FROM recommendations GROUP BY 1")
    assert day.to_dict("records") == [{"model_version": 2, "n": 9}]
    runs = warehouse.query("SELECT run_id, status FROM recommendation_runs ORDER BY finished_at")
    assert runs["run_id"].tolist() == ["run-0", "run-first", "run-second"] and set(runs["status"]) == {"success"}
