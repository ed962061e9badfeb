"""A PostgreSQL warehouse (postgresql://user@host:port/db, psycopg 3); COPY ... FROM STDIN bulk-loads the staging
tables."""

from __future__ import annotations

import datetime as dt
import io

from model_lib.contracts import Table
from model_lib.storage.warehouse.base import Warehouse

COPY_BATCH_ROWS = 65_536  # rows converted to CSV and sent to COPY at a time


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

    def _stage(self, connection, table, files):
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        columns = ", ".join(table.columns)
        staging = f"staging_{table.name}"
        connection.execute(
            f"CREATE TEMP TABLE {staging} AS SELECT {columns} FROM {self.names[table.name]} WITH NO DATA"
        )
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY {staging} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
                for file in files:
                    # One record batch at a time: the CSV of a whole file (a nightly table's day) never sits in memory.
                    for batch in pq.ParquetFile(file).iter_batches(batch_size=COPY_BATCH_ROWS, columns=table.columns):
                        buffer = io.BytesIO()
                        rows = pa.Table.from_batches([batch])
                        pacsv.write_csv(postgres_arrays(rows, table), buffer, pacsv.WriteOptions(include_header=False))
                        copy.write(buffer.getvalue())


def postgres_arrays(rows, table: Table):
    """The table's list columns as PostgreSQL array literals ({1.5,2} / {"a","b \\"c\\""}), which COPY in CSV form
    reads into DOUBLE PRECISION[] / VARCHAR[]; CSV itself has no lists."""
    import pyarrow as pa

    for name in table.array_columns:
        values = rows.column(name).to_pylist()
        literals = [None if value is None else "{" + ",".join(map(_array_element, value)) + "}" for value in values]
        rows = rows.set_column(rows.schema.get_field_index(name), name, pa.array(literals, pa.string()))
    return rows


def _array_element(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(float(value)) if isinstance(value, float) else str(value)
