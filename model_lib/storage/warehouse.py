"""Warehouse adapters: the tables analysts and downstream services read.

    recommendations(ds, user_id, rank, item_id, score, source, reason_item_id, model_name, model_version)
        one row per (ds, user_id, rank)
    recommendation_runs(ds, run_id, model_version, users, rows, coverage, started_at, finished_at, status)
        one row per publish attempt; status 'success' or 'failed'

A day is published atomically and idempotently: the day's Parquet files are bulk-loaded into a session-private
staging table and checked, then one transaction deletes the day and inserts it, so readers see the old day or the
new day, never a mix, and a re-run replaces the day. A failed publish rolls back, leaves the old day, and is still
recorded in recommendation_runs.

Two adapters share that logic and differ only in how they connect and bulk-load:
    duckdb:///abs/path.duckdb                 the embedded default (read_parquet straight into the staging table)
    postgresql://user:password@host:port/db   a server (COPY ... FROM STDIN in CSV form)
Our SQL is written once with `?` placeholders; every value is a bound parameter, every identifier a validated
plain identifier from configuration.

Readers (`reco show`, the demo summary, `query`) open the warehouse read-only and never run DDL, so they work with
a read-only PostgreSQL role and beside a DuckDB file another process reads. Publishes of the same day serialise: on
PostgreSQL the transaction first takes an advisory lock on (table, day), so a second publish waits for the first to
commit and then replaces its rows; every lock wait is bounded (`lock_timeout`) and a timeout says what waited.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path

import pandas as pd

from model_lib.config import check_identifier
from model_lib.contracts import RECOMMENDATION_COLUMNS, RECOMMENDATION_FIELDS, RECOMMENDATION_KEY
from model_lib.progress import say
from model_lib.redaction import redact

RECOMMENDATIONS_DDL = (
    "\nCREATE TABLE IF NOT EXISTS {table} (\n"
    + "".join(
        f"    {name} {sql_type}{'' if nullable else ' NOT NULL'},\n"
        for name, _, sql_type, nullable in RECOMMENDATION_FIELDS
    )
    + f"    PRIMARY KEY ({', '.join(RECOMMENDATION_KEY)})\n)"
)
RUNS_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    ds DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    model_version INTEGER,
    users BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    coverage DOUBLE PRECISION NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    status VARCHAR NOT NULL
)"""
STAGING_DDL = "CREATE TEMP TABLE staging ({columns})"
COLUMNS = RECOMMENDATION_COLUMNS


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Warehouse:
    """Publishing and reading, written once over a DB-API connection in autocommit mode (explicit BEGIN/COMMIT)."""

    def __init__(self, recommendations: str = "recommendations", runs: str = "recommendation_runs"):
        self.recommendations = check_identifier(recommendations)
        self.runs = check_identifier(runs)

    # Longest wait for another session's lock (a DuckDB file, a PostgreSQL row or advisory lock) before giving up.
    lock_wait_seconds = 300.0

    # --- what an adapter provides ---
    def _connect(self, read_only: bool):
        raise NotImplementedError

    def _lock_day(self, connection, ds: dt.date) -> None:
        """Inside the publish transaction: waits until no other publish of this day is in flight."""

    def _missing_table_errors(self) -> tuple[type[Exception], ...]:
        return ()

    def _execute(self, connection, sql: str, params: list | None = None):
        """Runs one statement with `?` placeholders; returns a cursor."""
        raise NotImplementedError

    def _stage(self, connection, files: list[str]) -> None:
        """Bulk-loads the Parquet files into the temporary table `staging` (COLUMNS, ds as DATE)."""
        raise NotImplementedError

    # --- shared ---
    def connect(self):
        """A writing connection; creates the tables on first use."""
        connection = self._connect(read_only=False)
        self._execute(connection, RECOMMENDATIONS_DDL.format(table=self.recommendations))
        self._execute(connection, RUNS_DDL.format(table=self.runs))
        return connection

    def publish(
        self, ds: dt.date, parquet_dir: Path, run_id: str, catalogue_size: int, started_at: dt.datetime
    ) -> dict:
        files = sorted(str(p) for p in Path(parquet_dir).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no recommendation files in {parquet_dir}: run the recommend step first")
        connection = self.connect()
        try:
            try:
                summary = self._publish_staged(connection, ds, files, run_id, catalogue_size, started_at)
            except Exception as error:
                self._record_failure(connection, ds, run_id, started_at, error)
                raise
        finally:
            # Closing without COMMIT rolls an open transaction back: the previous day stays as it was.
            connection.close()
        return summary

    def _publish_staged(self, connection, ds, files, run_id, catalogue_size, started_at) -> dict:
        self._stage(connection, files)
        bad_days = self._execute(connection, "SELECT count(*) FROM staging WHERE ds <> ?", [ds]).fetchone()[0]
        if bad_days:
            raise ValueError(f"{bad_days} staged rows are not for ds={ds}")
        users, rows, versions, distinct_items, version = self._execute(
            connection,
            "SELECT count(DISTINCT user_id), count(*), count(DISTINCT model_version), count(DISTINCT item_id), "
            "min(model_version) FROM staging",
        ).fetchone()
        if versions != 1:
            raise ValueError(f"the day mixes {versions} model versions; a run must use exactly one")
        coverage = distinct_items / max(catalogue_size, 1)
        columns = ", ".join(COLUMNS)
        self._execute(connection, "BEGIN")
        self._lock_day(connection, ds)
        self._execute(connection, f"DELETE FROM {self.recommendations} WHERE ds = ?", [ds])
        self._execute(connection, f"INSERT INTO {self.recommendations} ({columns}) SELECT {columns} FROM staging")
        self._record_run(connection, ds, run_id, version, users, rows, coverage, started_at, "success")
        self._execute(connection, "COMMIT")
        return {"ds": ds.isoformat(), "users": users, "rows": rows, "model_version": version, "coverage": coverage}

    def _record_failure(self, connection, ds, run_id, started_at, error: Exception) -> None:
        try:
            try:
                self._execute(connection, "ROLLBACK")
            except Exception:  # noqa: BLE001 - there was no open transaction to roll back
                pass
            self._record_run(connection, ds, run_id, None, 0, 0, 0.0, started_at, "failed")
        except Exception as record_error:  # noqa: BLE001 - the publish error is the one to raise
            error.add_note(f"recording the failed run in {self.runs} also failed: {record_error}")

    def _record_run(self, connection, ds, run_id, version, users, rows, coverage, started_at, status) -> None:
        self._execute(
            connection,
            f"INSERT INTO {self.runs} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [ds, run_id, version, users, rows, coverage, started_at, _utc_now(), status],
        )

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """A read with `?` placeholders -> a DataFrame, on a read-only connection (no DDL)."""
        connection = self._connect(read_only=True)
        try:
            cursor = self._execute(connection, sql, params)
            names = [column[0] for column in cursor.description]
            return pd.DataFrame(cursor.fetchall(), columns=names)
        except self._missing_table_errors() as error:
            raise LookupError(
                f"the warehouse has no table {self.recommendations} / {self.runs} yet: run reco_nightly (its publish "
                f"step) first ({str(error).splitlines()[0]})"
            ) from None
        finally:
            connection.close()

    # --- the reads `reco show` and the demo summary make ---
    def latest_ds(self) -> dt.date | None:
        return self.query(f"SELECT max(ds) AS ds FROM {self.recommendations}")["ds"][0]

    def user_recommendations(self, user_id: str, ds: dt.date, max_rank: int | None = None) -> pd.DataFrame:
        return self.query(
            "SELECT rank, item_id, score, source, reason_item_id, model_version "
            f"FROM {self.recommendations} WHERE ds = ? AND user_id = ? AND rank <= ? ORDER BY rank",
            [ds, user_id, max_rank or 2**31 - 1],
        )

    def some_users(self, ds: dt.date, limit: int) -> list[str]:
        users = self.query(
            f"SELECT DISTINCT user_id FROM {self.recommendations} WHERE ds = ? ORDER BY user_id LIMIT ?", [ds, limit]
        )
        return users["user_id"].tolist()

    def last_run(self, ds: dt.date) -> dict | None:
        runs = self.query(
            f"SELECT run_id, status, users, rows, coverage, model_version FROM {self.runs} "
            "WHERE ds = ? ORDER BY finished_at DESC LIMIT 1",
            [ds],
        )
        return runs.to_dict("records")[0] if len(runs) else None


class DuckDBWarehouse(Warehouse):
    """The embedded default: one DuckDB file."""

    # A DuckDB file has one writing process at a time (and readers only beside other readers); two runs that
    # publish different days together (backfills) take turns. Waiting longer than lock_wait_seconds means something
    # else holds the file (an open notebook, say).

    def __init__(self, path: Path, **tables):
        super().__init__(**tables)
        self.path = Path(path)

    def _missing_table_errors(self):
        import duckdb

        return (duckdb.CatalogException,)

    def _connect(self, read_only: bool):
        import duckdb

        if read_only and not self.path.exists():
            raise LookupError(f"no warehouse file {self.path} yet: run reco_nightly (its publish step) first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started, announced = time.monotonic(), False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as error:
                if "Conflicting lock" not in str(error):
                    raise
                held_by = str(error).partition("Conflicting lock is held in ")[2].split(". See")[0]
                waited = time.monotonic() - started
                if waited > self.lock_wait_seconds:
                    raise TimeoutError(
                        f"{self.path} has been in use by {held_by} for {waited:.0f} s: close that session, then re-run"
                    ) from None
                if not announced:
                    say(f"{self.path} is in use by {held_by}; waiting for it")
                    announced = True
                time.sleep(1)

    def _execute(self, connection, sql, params=None):
        return connection.execute(sql, params or [])

    def _stage(self, connection, files):
        connection.execute(
            f"CREATE TEMP TABLE staging AS SELECT CAST(ds AS DATE) AS ds, {', '.join(COLUMNS[1:])} "
            "FROM read_parquet(?)",
            [files],
        )


class PostgresWarehouse(Warehouse):
    """A PostgreSQL server, through psycopg 3; the connection string comes from configuration (or PG* variables)."""

    def __init__(self, url: str, **tables):
        super().__init__(**tables)
        self.url = url

    def _connect(self, read_only: bool):
        import psycopg

        # Readers run in read-only transactions (a read-only role suffices); writers bound every lock wait.
        options = (
            "-c default_transaction_read_only=on" if read_only else f"-c lock_timeout={self.lock_wait_seconds:.0f}s"
        )
        return psycopg.connect(self.url, autocommit=True, options=options)

    def _missing_table_errors(self):
        import psycopg

        return (psycopg.errors.UndefinedTable,)

    def _lock_day(self, connection, ds: dt.date) -> None:
        import psycopg

        try:
            # Released at COMMIT or ROLLBACK; the key is (table, day), so other days publish in parallel.
            self._execute(
                connection, "SELECT pg_advisory_xact_lock(hashtext(?), ?)", [self.recommendations, ds.toordinal()]
            )
        except psycopg.errors.LockNotAvailable:
            raise TimeoutError(
                f"another publish of ds={ds} held the day for more than {self.lock_wait_seconds:.0f} s (lock_timeout); "
                "see pg_stat_activity for the session, then re-run"
            ) from None

    def _execute(self, connection, sql, params=None):
        # psycopg binds with %s; our SQL holds no literal '?' or '%'.
        return connection.execute(sql.replace("?", "%s"), params or None)

    def _stage(self, connection, files):
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        connection.execute(
            f"CREATE TEMP TABLE staging AS SELECT {', '.join(COLUMNS)} FROM {self.recommendations} WITH NO DATA"
        )
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY staging ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)") as copy:
                for file in files:
                    buffer = io.BytesIO()
                    pacsv.write_csv(
                        pq.read_table(file, columns=COLUMNS), buffer, pacsv.WriteOptions(include_header=False)
                    )
                    copy.write(buffer.getvalue())


def open_warehouse(url: str) -> Warehouse:
    """duckdb:///absolute/path.duckdb or postgresql://... -> the adapter for it."""
    if url.startswith("duckdb:///"):
        return DuckDBWarehouse(Path(url.removeprefix("duckdb://")))
    if url.startswith("postgresql://"):
        return PostgresWarehouse(url)
    raise ValueError(
        f"unsupported warehouse URL {redact(url)!r}: use duckdb:///absolute/path.duckdb or postgresql://..."
    )
