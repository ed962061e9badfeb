"""The class-data archive `make setup` records (`reco spark-class-archive`): a fresh Spark JVM maps Spark's classes
from it instead of reading them from the jars, and a JVM or jar set it was not recorded for never uses it."""

from __future__ import annotations

import os
import subprocess
import sys

from model_lib.config import get_settings
from model_lib.runtime import class_archive, driver_java_options, engine_environment

PROBE = """
from model_lib.config import get_settings
from model_lib.storage.spark import spark_session

spark = spark_session(get_settings().engines, "reco-test-class-archive")
print("COUNT", spark.range(1000).selectExpr("id % 7 AS k").groupBy("k").count().count())
"""


def test_a_fresh_spark_jvm_loads_sparks_classes_from_the_archive(tmp_path):
    archive = class_archive()
    assert archive.exists(), f"make setup records {archive} (reco spark-class-archive); it is missing"
    assert driver_java_options() == f"-XX:SharedArchiveFile={archive}"
    loaded = tmp_path / "classes.log"
    env = {
        **os.environ,
        **engine_environment(get_settings(data_dir=tmp_path).engines),
        # Every JVM started with this variable logs where each class came from.
        "JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={loaded}",
    }
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "COUNT 7" in done.stdout, done.stdout + done.stderr[-3000:]
    lines = loaded.read_text().splitlines()
    spark_classes = [line for line in lines if "] org.apache.spark." in line]
    from_archive = [line for line in spark_classes if "source: shared objects file (top)" in line]
    # Classes made at run time (lambdas, generated code) come from neither; those read from Spark's jar files are
    # the ones the archive misses.
    from_jars = [line for line in spark_classes if "source: file:" in line or "source: jar:" in line]
    assert any(" org.apache.spark.sql.Dataset source: shared objects file (top)" in line for line in lines)
    assert len(from_archive) > 1000 and len(from_archive) > 0.9 * (len(from_archive) + len(from_jars)), (
        len(from_archive),
        from_jars[:20],
    )


def test_the_archive_is_named_for_the_java_and_the_jars_it_was_recorded_with(tmp_path, monkeypatch):
    """A different Java (or Spark's jars) must not map an archive recorded by another: its name changes."""
    recorded_for_this_java = class_archive()
    other_java = tmp_path / "jdk" / "bin" / "java"
    other_java.parent.mkdir(parents=True)
    other_java.write_text("#!/bin/sh\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert class_archive() != recorded_for_this_java
    assert class_archive().parent == recorded_for_this_java.parent
    assert driver_java_options() == ""  # nothing recorded for that Java: the JVM starts without an archive
    assert driver_java_options(tmp_path / "new.jsa") == f"-XX:ArchiveClassesAtExit={tmp_path / 'new.jsa'}"
