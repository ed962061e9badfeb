"""The warehouse: the nightly tables analysts and downstream services read (base.py: publishing a day in one
transaction, and the reads), on DuckDB (duckdb_adapter.py) or PostgreSQL (postgres_adapter.py)."""

from __future__ import annotations

from pathlib import Path

from model_lib.redaction import redact
from model_lib.storage.warehouse.base import Warehouse, table_ddl
from model_lib.storage.warehouse.duckdb_adapter import DuckDBWarehouse
from model_lib.storage.warehouse.postgres_adapter import PostgresWarehouse

__all__ = ["DuckDBWarehouse", "PostgresWarehouse", "Warehouse", "open_warehouse", "table_ddl"]


def open_warehouse(url: str) -> Warehouse:
    """duckdb:///absolute/path.duckdb or postgresql://... -> the adapter for it."""
    if url.startswith("duckdb:///"):
        return DuckDBWarehouse(Path(url.removeprefix("duckdb://")))
    if url.startswith("postgresql://"):
        return PostgresWarehouse(url)
    raise ValueError(
        f"unsupported warehouse URL {redact(url)!r}: use duckdb:///absolute/path.duckdb or postgresql://..."
    )
