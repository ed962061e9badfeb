"""The sessionize job on a real Spark standalone cluster (a master and one worker from the pyspark package, both on
127.0.0.1), submitted the way the DAG submits it: Airflow runs the DAG's SparkSubmitOperator task, which takes the
master from the `spark_default` connection. The output must equal a local-mode run on the same files."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from helpers.processes import free_port, run_ok, start_server, stop_server, wait_for
from jobs import sessionize
from model_lib.config import get_settings
from model_lib.data.sources import SynthSpec, write_synth
from model_lib.runtime import engine_environment

pytestmark = [pytest.mark.slow, pytest.mark.spark]
BIN = Path(sys.executable).parent


def master_state(web_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/json/", timeout=5) as response:
        return json.load(response)


@pytest.fixture
def standalone_cluster(tmp_path):
    env = {**os.environ, **engine_environment(get_settings(data_dir=tmp_path).engines)}
    port, web_port, worker_web_port = free_port(), free_port(), free_port()
    master = start_server(
        [str(BIN / "spark-class"), "org.apache.spark.deploy.master.Master"]
        + ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(web_port)],
        env,
        tmp_path / "master.log",
    )
    worker = None
    try:
        wait_for(lambda: master_state(web_port)["status"] == "ALIVE", "the Spark master")
        worker = start_server(
            [str(BIN / "spark-class"), "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}"]
            + ["--host", "127.0.0.1", "--webui-port", str(worker_web_port), "--cores", "2", "--memory", "2g"]
            + ["--work-dir", str(tmp_path / "worker")],
            env,
            tmp_path / "worker.log",
        )
        wait_for(lambda: master_state(web_port)["aliveworkers"] == 1, "the Spark worker to register")
        yield port, web_port
    finally:
        for process in (worker, master):
            if process is not None:
                stop_server(process)


def test_sessionize_on_a_standalone_cluster_equals_local_mode(standalone_cluster, tmp_path, spark):
    port, web_port = standalone_cluster
    cluster_data = tmp_path / "cluster" / "data"
    per_day = write_synth(
        SynthSpec(users=30, items=20, days=2), get_settings(data_dir=cluster_data).lake.raw_events_dir
    )
    ds = max(per_day)
    env = {
        **os.environ,
        **engine_environment(get_settings(data_dir=cluster_data).engines),
        "RECO_DATA_DIR": str(cluster_data),
        "RECO_MIN_ITEM_COUNT": "1",
        "RECO_SEQ_LEN": "8",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "spark://127.0.0.1", "port": port}),
    }
    run_ok([str(BIN / "airflow"), "db", "migrate"], env)
    run_ok([str(BIN / "airflow"), "tasks", "test", "reco_nightly", "sessionize", ds], env)
    applications = [app["name"] for app in master_state(web_port)["completedapps"]]
    assert f"reco-sessionize-{ds}" in applications  # it really ran on the cluster

    local = get_settings(data_dir=tmp_path / "local" / "data", min_item_count=1, seq_len=8)
    shutil.copytree(get_settings(data_dir=cluster_data).lake.raw_events_dir, local.lake.raw_events_dir)
    sessionize.run(local, dt.date.fromisoformat(ds), spark=spark)
    on_cluster = get_settings(data_dir=cluster_data, min_item_count=1, seq_len=8)
    for folder in ("sequences_dir", "vocab_dir"):
        expected = pd.read_parquet(getattr(local.lake, folder)(dt.date.fromisoformat(ds)))
        actual = pd.read_parquet(getattr(on_cluster.lake, folder)(dt.date.fromisoformat(ds)))
        sort = "user_id" if "user_id" in expected else "item_index"
        pd.testing.assert_frame_equal(
            actual.sort_values(sort).reset_index(drop=True).map(_plain),
            expected.sort_values(sort).reset_index(drop=True).map(_plain),
        )


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else value
