"""The embedded warehouse: one DuckDB file (duckdb:///abs/path.duckdb); read_parquet bulk-loads the staging tables."""

from __future__ import annotations

import time
from pathlib import Path

from model_lib.progress import say
from model_lib.storage.warehouse.base import Warehouse


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

    def _stage(self, connection, table, files):
        connection.execute(
            f"CREATE TEMP TABLE staging_{table.name} AS SELECT CAST(ds AS DATE) AS ds, {', '.join(table.columns[1:])} "
            "FROM read_parquet(?)",
            [files],
        )
