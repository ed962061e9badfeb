"""Warehouse adapters: the tables analysts and downstream services read.

    the nightly tables (contracts.NIGHTLY_TABLES), each keyed by ds and naming the model version that wrote it:
    recommendations(ds, user_id, rank, item_id, score, source, reason_item_id, model_name, model_version)
        one row per (ds, user_id, rank)
    user_next_behaviour(ds, user_id, event_type, probability, model_name, model_version)
        one row per (ds, user_id, event_type)
    recommendation_runs(ds, run_id, model_version, users, rows, coverage, started_at, finished_at, status)
        one row per publish attempt; status 'success' or 'failed'
    published_tables(ds, run_id, table_name, rows, model_version)
        the rows each nightly table received from a successful publish

A day is published atomically and idempotently, across all its tables: each table's Parquet files are bulk-loaded
into a session-private staging table and checked (the day, one model version across every table), then one
transaction deletes the day from every nightly table and inserts what this run produced, so readers see the old
day or the new day of every table, never a mix of days or versions, and a re-run replaces the day. A table this
run did not produce (a champion without the event-type head writes no next-behaviour rows) is left empty for the
day rather than keeping another version's rows. A failed publish rolls back, leaves the old day, and is still
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
from pathlib import Path

import pandas as pd

from model_lib.config import check_identifier
from model_lib.contracts import NIGHTLY_TABLES, PUBLISHED_TABLES, RECOMMENDATION_RUNS, RECOMMENDATIONS, Table


def table_ddl(table: Table, name: str) -> str:
    """CREATE TABLE for a warehouse table's contract, under the (validated) name `name`."""
    lines = [f"{column.name} {column.sql_type}{'' if column.nullable else ' NOT NULL'}" for column in table.fields]
    if table.key:
        lines.append(f"PRIMARY KEY ({', '.join(table.key)})")
    return f"\nCREATE TABLE IF NOT EXISTS {name} (\n    " + ",\n    ".join(lines) + "\n)"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Warehouse:
    """Publishing and reading, written once over a DB-API connection in autocommit mode (explicit BEGIN/COMMIT)."""

    def __init__(
        self,
        recommendations: str = RECOMMENDATIONS.name,
        runs: str = "recommendation_runs",
        published: str = "published_tables",
    ):
        self.recommendations = check_identifier(recommendations)
        self.runs = check_identifier(runs)
        self.published = check_identifier(published)
        # Contract name -> table name (the recommendations table's name is configurable, the others are not).
        self.names = {table.name: table.name for table in NIGHTLY_TABLES} | {RECOMMENDATIONS.name: self.recommendations}

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

    def _stage(self, connection, table: Table, files: list[str]) -> None:
        """Bulk-loads the Parquet files into the temporary table staging_<table.name> (its columns, ds as DATE)."""
        raise NotImplementedError

    # --- shared ---
    def connect(self):
        """A writing connection; creates the tables on first use."""
        connection = self._connect(read_only=False)
        for table in NIGHTLY_TABLES:
            self._execute(connection, table_ddl(table, self.names[table.name]))
        self._execute(connection, table_ddl(RECOMMENDATION_RUNS, self.runs))
        self._execute(connection, table_ddl(PUBLISHED_TABLES, self.published))
        return connection

    def publish(
        self,
        ds: dt.date,
        parquet_dir: Path,
        run_id: str,
        catalogue_items: int,
        started_at: dt.datetime,
        other_tables: dict[str, Path] | None = None,
    ) -> dict:
        """Publishes the day's recommendations (`parquet_dir`) and the other nightly tables this run produced
        (`other_tables`: contract name -> Parquet folder; a table not given, or given an empty folder, gets no rows
        for the day) in one transaction."""
        folders = {
            RECOMMENDATIONS.name: Path(parquet_dir),
            **{name: Path(f) for name, f in (other_tables or {}).items()},
        }
        unknown = sorted(set(folders) - set(self.names))
        if unknown:
            raise ValueError(f"{unknown} are not nightly tables {sorted(self.names)}")
        files = {name: sorted(str(p) for p in folder.glob("*.parquet")) for name, folder in folders.items()}
        if not files[RECOMMENDATIONS.name]:
            raise FileNotFoundError(f"no recommendation files in {parquet_dir}: run the recommend step first")
        connection = self.connect()
        try:
            try:
                summary = self._publish_staged(connection, ds, files, run_id, catalogue_items, started_at)
            except Exception as error:
                self._record_failure(connection, ds, run_id, started_at, error)
                raise
        finally:
            # Closing without COMMIT rolls an open transaction back: the previous day stays as it was.
            connection.close()
        return summary

    def _publish_staged(self, connection, ds, files, run_id, catalogue_items, started_at) -> dict:
        staged = [table for table in NIGHTLY_TABLES if files.get(table.name)]
        for table in staged:
            self._stage(connection, table, files[table.name])
        versions = self._check_staged(connection, ds, staged)
        users, rows, distinct_items = self._execute(
            connection,
            f"SELECT count(DISTINCT user_id), count(*), count(DISTINCT item_id) FROM staging_{RECOMMENDATIONS.name}",
        ).fetchone()
        coverage = distinct_items / max(catalogue_items, 1)
        self._execute(connection, "BEGIN")
        self._lock_day(connection, ds)
        table_rows = {}
        for table in NIGHTLY_TABLES:
            name = self.names[table.name]
            self._execute(connection, f"DELETE FROM {name} WHERE ds = ?", [ds])
            if table in staged:
                columns = ", ".join(table.columns)
                self._execute(connection, f"INSERT INTO {name} ({columns}) SELECT {columns} FROM staging_{table.name}")
                table_rows[table.name] = self._execute(
                    connection, f"SELECT count(*) FROM staging_{table.name}"
                ).fetchone()[0]
                self._execute(
                    connection,
                    f"INSERT INTO {self.published} VALUES (?, ?, ?, ?, ?)",
                    [ds, run_id, table.name, table_rows[table.name], versions[0]],
                )
        self._record_run(connection, ds, run_id, versions[0], users, rows, coverage, started_at, "success")
        self._execute(connection, "COMMIT")
        return {
            "ds": ds.isoformat(),
            "users": users,
            "rows": rows,
            "model_version": versions[0],
            "coverage": coverage,
            "tables": table_rows,
        }

    def _check_staged(self, connection, ds: dt.date, staged: list[Table]) -> list[int]:
        """Every staged row is for `ds` and all tables come from one model version; -> [that version]."""
        versions = set()
        for table in staged:
            bad_days, *found = self._execute(
                connection,
                f"SELECT count(*) FILTER (WHERE ds <> ?), min(model_version), max(model_version) "
                f"FROM staging_{table.name}",
                [ds],
            ).fetchone()
            if bad_days:
                raise ValueError(f"{bad_days} staged {table.name} rows are not for ds={ds}")
            versions |= {version for version in found if version is not None}
        if len(versions) != 1:
            raise ValueError(f"the day mixes {len(versions)} model versions; a run must use exactly one")
        return sorted(versions)

    def _record_failure(self, connection, ds, run_id, started_at, error: Exception) -> None:
        try:
            try:
                self._execute(connection, "ROLLBACK")
            except Exception:  # noqa: BLE001 - there was no open transaction to roll back
                pass
            self._record_run(connection, ds, run_id, None, 0, 0, 0.0, started_at, "failed")
        except Exception as record_error:  # noqa: BLE001 - the publish error is the one to raise
            error.add_note(f"recording the failed run in {self.runs} also failed: {record_error}")

    def remove_days_before(self, cutoff: dt.date) -> dict[str, int]:
        """Retention: deletes every nightly table's rows (and the runs' records) of days before `cutoff`, in one
        transaction. Returns the rows deleted per table."""
        connection = self.connect()
        try:
            self._execute(connection, "BEGIN")
            removed = {}
            for name in [*self.names.values(), self.published, self.runs]:
                removed[name] = self._execute(
                    connection, f"SELECT count(*) FROM {name} WHERE ds < ?", [cutoff]
                ).fetchone()[0]
                self._execute(connection, f"DELETE FROM {name} WHERE ds < ?", [cutoff])
            self._execute(connection, "COMMIT")
        finally:
            connection.close()  # without COMMIT the transaction rolls back
        return removed

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

    def next_behaviour(self, user_id: str, ds: dt.date) -> dict[str, float]:
        """event type -> the chance that the user's next event is of it (empty without the event-type head)."""
        rows = self.query(
            "SELECT event_type, probability FROM user_next_behaviour WHERE ds = ? AND user_id = ? "
            "ORDER BY probability DESC",
            [ds, user_id],
        )
        return dict(zip(rows["event_type"], rows["probability"], strict=True))

    def user_segment(self, user_id: str, ds: dt.date) -> tuple[int, str] | None:
        """The user's segment that day and its description (None when the user has no profile that day)."""
        rows = self.query(
            "SELECT p.segment, s.description FROM user_profiles p JOIN user_segments s USING (ds, segment) "
            "WHERE p.ds = ? AND p.user_id = ?",
            [ds, user_id],
        )
        return (int(rows["segment"].iloc[0]), rows["description"].iloc[0]) if len(rows) else None

    def segments(self, ds: dt.date) -> pd.DataFrame:
        """The day's user segments, largest first."""
        return self.query(
            "SELECT segment, users, description FROM user_segments WHERE ds = ? ORDER BY users DESC, segment", [ds]
        )

    def anomalies(self, ds: dt.date, limit: int) -> pd.DataFrame:
        """The day's most surprising users, most surprising first."""
        return self.query(
            "SELECT user_id, score, percentile, events, most_surprising_item_id FROM user_anomalies WHERE ds = ? "
            "ORDER BY score DESC, user_id LIMIT ?",
            [ds, limit],
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
