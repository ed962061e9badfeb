"""Warehouse adapters: the tables analysts and downstream services read.

    recommendations(ds, user_id, rank, item_id, score, source, reason_item_id, model_name, model_version)
        one row per (ds, user_id, rank)
    recommendation_runs(ds, run_id, model_version, users, rows, coverage, started_at, finished_at, status)

A day is published atomically and idempotently: the new rows are staged first, then one transaction deletes the
day and inserts it, so readers see the old day or the new day, never a mix, and a re-run replaces the day.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from model_lib.config import check_identifier

RECOMMENDATIONS_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    ds DATE NOT NULL,
    user_id VARCHAR NOT NULL,
    rank INTEGER NOT NULL,
    item_id VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    source VARCHAR NOT NULL,
    reason_item_id VARCHAR,
    model_name VARCHAR NOT NULL,
    model_version INTEGER NOT NULL,
    PRIMARY KEY (ds, user_id, rank)
)"""
RUNS_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    ds DATE NOT NULL,
    run_id VARCHAR NOT NULL,
    model_version INTEGER NOT NULL,
    users BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    coverage DOUBLE NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    status VARCHAR NOT NULL
)"""
COLUMNS = ["ds", "user_id", "rank", "item_id", "score", "source", "reason_item_id", "model_name", "model_version"]


class DuckDBWarehouse:
    """The embedded default: one DuckDB file."""

    def __init__(self, path: Path, recommendations: str = "recommendations", runs: str = "recommendation_runs"):
        self.path = Path(path)
        self.recommendations = check_identifier(recommendations)
        self.runs = check_identifier(runs)

    def connect(self):
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = duckdb.connect(str(self.path))
        connection.execute(RECOMMENDATIONS_DDL.format(table=self.recommendations))
        connection.execute(RUNS_DDL.format(table=self.runs))
        return connection

    def publish(
        self, ds: dt.date, parquet_dir: Path, run_id: str, catalogue_size: int, started_at: dt.datetime
    ) -> dict:
        files = sorted(str(p) for p in Path(parquet_dir).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no recommendation files in {parquet_dir}: run the recommend step first")
        connection = self.connect()
        try:
            columns = ", ".join(COLUMNS)
            connection.execute(
                f"CREATE TEMP TABLE staging AS SELECT CAST(ds AS DATE) AS ds, {', '.join(COLUMNS[1:])} "
                "FROM read_parquet(?)",
                [files],
            )
            bad_days = connection.execute("SELECT count(*) FROM staging WHERE ds <> ?", [ds]).fetchone()[0]
            if bad_days:
                raise ValueError(f"{bad_days} staged rows are not for ds={ds}")
            users, rows, versions, distinct_items = connection.execute(
                "SELECT count(DISTINCT user_id), count(*), count(DISTINCT model_version), count(DISTINCT item_id) "
                "FROM staging"
            ).fetchone()
            if versions != 1:
                raise ValueError(f"the day mixes {versions} model versions; a run must use exactly one")
            version = connection.execute("SELECT any_value(model_version) FROM staging").fetchone()[0]
            coverage = distinct_items / max(catalogue_size, 1)
            connection.execute("BEGIN TRANSACTION")
            connection.execute(f"DELETE FROM {self.recommendations} WHERE ds = ?", [ds])
            connection.execute(f"INSERT INTO {self.recommendations} ({columns}) SELECT {columns} FROM staging")
            connection.execute(
                f"INSERT INTO {self.runs} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    ds,
                    run_id,
                    version,
                    users,
                    rows,
                    coverage,
                    started_at,
                    dt.datetime.now(dt.UTC).replace(tzinfo=None),
                    "success",
                ],
            )
            connection.execute("COMMIT")
        finally:
            # Closing without COMMIT rolls the open transaction back: the previous day stays as it was.
            connection.close()
        return {"ds": ds.isoformat(), "users": users, "rows": rows, "model_version": version, "coverage": coverage}

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        connection = self.connect()
        try:
            return connection.execute(sql, params or []).df()
        finally:
            connection.close()


def open_warehouse(url: str) -> DuckDBWarehouse:
    """duckdb:///absolute/path.duckdb -> the DuckDB adapter (PostgreSQL arrives with its own adapter)."""
    if url.startswith("duckdb:///"):
        return DuckDBWarehouse(Path(url.removeprefix("duckdb://")))
    raise ValueError(f"unsupported warehouse URL {url!r}: only duckdb:///path is implemented so far")
