"""The SparkSession every job and test uses: UTC, Arrow on, small shuffles, bound to 127.0.0.1 unless configured,
and a driver JVM that maps Spark's classes from a class-data archive instead of loading them one by one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from model_lib.config import EngineSettings
from model_lib.progress import say
from model_lib.redaction import redact
from model_lib.runtime import QUICK_JIT, SHARED_ARCHIVE, apply_engine_environment, driver_java_options
from model_lib.storage.lake import parquet_files

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# The footer entry in which Spark's Parquet writer records the schema it wrote, exactly (Spark's own types).
SPARK_SCHEMA_KEY = b"org.apache.spark.sql.parquet.row.metadata"


def spark_session(
    engines: EngineSettings, app_name: str, archive_classes_to: Path | None = None, quick_jit: bool = False
) -> SparkSession:
    """Gets (or creates) the session. Under spark-submit the master comes from the command line (and the JVM options,
    see `driver_java_options`). `archive_classes_to`: the new JVM records the classes it loads, for
    `finish_class_archive` to write there (make setup does this once, see class_archive). `quick_jit`: a job of
    seconds (see driver_java_options); it only takes effect when this call starts the JVM."""
    apply_engine_environment(engines)
    builder = (
        SparkSession.builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(engines.spark_shuffle_partitions))
        .config("spark.sql.objectHashAggregate.sortBased.fallbackThreshold", str(engines.spark_hash_aggregate_keys))
        .config("spark.sql.inMemoryColumnarStorage.compressed", str(engines.spark_compress_cache).lower())
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", engines.spark_driver_memory)
        .config("spark.driver.host", engines.spark_driver_host)
        .config("spark.driver.bindAddress", engines.spark_bind_address)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # Every write goes to a staging folder that storage/lake.commit_folder swaps into place whole; Spark's own
        # second round of renames at job commit (algorithm 1) would only repeat that work.
        .config("spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version", "2")
    )
    if java_options := driver_java_options(archive_classes_to, quick_jit):
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    # Spark runs one Python worker per task slot (per core); a BLAS thread pool per worker on top of that
    # oversubscribes the cores: the scoring's small matrix products ran 8x slower with two workers of two threads.
    for variable in BLAS_THREAD_VARIABLES:
        builder = builder.config(f"spark.executorEnv.{variable}", "1")
    # spark-submit starts the JVM first and hands its port over; then the master and the application name
    # (the DAG's per-run name) come from its command line.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(engines.spark_master).appName(app_name)
    session = builder.getOrCreate()
    # spark-submit defaults to INFO; task logs should show our stage lines, not every Spark task.
    session.sparkContext.setLogLevel("WARN")
    _report_driver(session, engines)
    return session


def finish_class_archive(session: SparkSession, recorded: Path, archive: Path) -> Path:
    """Stops a session started with `archive_classes_to=recorded`, waits for its JVM to write the archive on exit
    (10-20 s; a JVM killed first writes nothing), then moves it into place in one rename (`recorded` should be in
    the archive's folder: a rename does not cross file systems)."""
    gateway = session.sparkContext._gateway
    session.stop()
    # pyspark's JVM exits when its stdin closes; the archive is dumped on the way out, so wait for the exit.
    gateway.proc.stdin.close()
    if gateway.proc.wait(timeout=600) != 0 or not recorded.exists():
        raise RuntimeError(f"the Spark JVM exited with {gateway.proc.returncode} without writing {recorded}")
    os.replace(recorded, archive)
    return archive


def _report_driver(session: SparkSession, engines: EngineSettings) -> None:
    """One line with the driver JVM's real heap, JIT and class archive, read from the running JVM: they only take
    effect when the JVM starts, so under spark-submit they must come from its command line (the DAGs pass them); a
    setting the running JVM did not get is said, not silently ignored."""
    jvm = session.sparkContext._jvm
    heap = jvm.java.lang.Runtime.getRuntime().maxMemory()
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    wanted = _bytes(engines.spark_driver_memory)
    line = (
        f"spark: master {redact(session.sparkContext.master)}, driver heap {heap / 2**30:.1f} GiB "
        f"(RECO_SPARK_DRIVER_MEMORY {engines.spark_driver_memory})"
    )
    if heap < 0.7 * wanted:  # the JVM reserves part of -Xmx for itself; far below means the setting never reached it
        line += ": the driver JVM started without it — pass --driver-memory to spark-submit"
    line += ", JIT " + ("C1 only (a job of seconds)" if QUICK_JIT in arguments else "C1 + C2")
    line += ", class archive " + ("mapped" if any(a.startswith(SHARED_ARCHIVE) for a in arguments) else "none")
    say(line)


def _bytes(size: str) -> int:
    """A JVM memory size such as 4g or 512m -> bytes."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    text = size.strip().lower().removesuffix("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def size_shuffles(spark: SparkSession, engines: EngineSettings, rows: int) -> int:
    """Sets the session's shuffle partitions for the `rows` a job is about to shuffle: one partition per
    spark_rows_per_shuffle_partition rows, at least one per core (Spark's default parallelism), at most
    spark_shuffle_partitions. A night's day of events then runs on as many partitions as cores instead of the
    history-sized maximum (adaptive execution does not coalesce the partitions of a cached frame). Returns the count."""
    wanted = -(-rows // engines.spark_rows_per_shuffle_partition)
    partitions = max(spark.sparkContext.defaultParallelism, min(engines.spark_shuffle_partitions, wanted))
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    return partitions


def read_parquet(spark: SparkSession, folder: Path) -> DataFrame:
    """A Parquet folder Spark wrote, read with the schema Spark recorded in it (one file's footer, read here in
    milliseconds): inferring the schema is a Spark job of its own, some 0.3 s of a cold nightly job. Files of other
    writers (pandas, in tests and benchmarks) record no Spark schema and are inferred as usual."""
    import pyarrow.parquet as pq

    files = parquet_files(folder)
    recorded = (pq.read_schema(files[0]).metadata or {}).get(SPARK_SCHEMA_KEY) if files else None
    reader = spark.read.schema(T.StructType.fromJson(json.loads(recorded))) if recorded else spark.read
    return reader.parquet(str(folder))


def side_by_side(jobs: list[Callable[[], object]]) -> list:
    """Runs each function (each starting its own Spark jobs, e.g. a write) from its own driver thread and returns
    their results in order. Spark schedules the jobs of several threads concurrently, so one job's fixed costs
    (planning, code generation, commit) overlap another's work: most of a small job's time on two cores."""
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        return [future.result() for future in [pool.submit(job) for job in jobs]]
