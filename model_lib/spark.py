"""The SparkSession every job and test uses: UTC, Arrow on, small shuffles, bound to 127.0.0.1 unless configured."""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

from model_lib.config import Settings
from model_lib.runtime import apply_engine_environment


def spark_session(settings: Settings, app_name: str) -> SparkSession:
    """Gets (or creates) the session. Under spark-submit the master comes from the command line."""
    apply_engine_environment(settings)
    builder = (
        SparkSession.builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.driver.host", settings.spark_driver_host)
        .config("spark.driver.bindAddress", settings.spark_bind_address)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
    )
    # spark-submit starts the JVM first and hands its port over; then the master and the application name
    # (the DAG's per-run name) come from its command line.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(settings.spark_master).appName(app_name)
    session = builder.getOrCreate()
    # spark-submit defaults to INFO; task logs should show our stage lines, not every Spark task.
    session.sparkContext.setLogLevel("WARN")
    return session
