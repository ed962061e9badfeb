"""`reco bench scoring` on a small synthetic catalogue: one JSON line with the job, ALS and the references."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers.processes import run_ok
from model_lib.storage.spark import SPARK_SCHEMA_KEY

RECO = str(Path(sys.executable).parent / "reco")


@pytest.mark.slow
def test_bench_scoring_prints_users_per_second_against_als_and_numpy(tmp_path):
    env = {**os.environ, "RECO_SEQ_LEN": "20", "RECO_EMBEDDING_DIM": "16", "RECO_HIDDEN_DIM": "16"}
    command = [RECO, "bench", "scoring", "--dataset", "synthetic", "--users", "400", "--items", "3000"]
    recorded = tmp_path / "scoring.jsonl"
    stdout, _ = run_ok([*command, "--root", str(tmp_path / "b"), "--results", str(recorded)], env)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert (result["dataset"], result["users"], result["items"], result["k"]) == ("synthetic", 400, 3000, 20)
    for rate in (result["job_cold_users_per_s"], result["job_warm_users_per_s"], result["als"]["users_per_s"]):
        assert rate > 0
    assert result["in_process"]["multiply_gflops"] > 0 and result["numpy"]["same_shape_gflops"] > 0
    assert set(result["ratios"]) >= {"job_cold_vs_als", "job_warm_vs_als", "multiply_vs_numpy_same_shape"}
    # ALS also from a cold start (its saved model in a fresh process), for the like-for-like ratio.
    assert result["als"]["cold_users_per_s"] > 0
    # The job also in fresh processes (a new JVM each, as a nightly spark-submit), after a first night there: a
    # night of seconds, so the next took the quick JIT, as the nightly DAG would give it (jobs/recommend.quick_jit).
    fresh = result["job_fresh"]
    assert fresh["quick_jit"] is True and fresh["first_night_users_per_s"] > 0 and fresh["top_k_alone_users_per_s"] > 0
    assert {"job_fresh_first_night_vs_als_cold", "job_fresh_top_k_alone_vs_als_cold"} <= set(result["ratios"])
    assert any((tmp_path / "b" / "synthetic" / "als" / "recommendations-cold").glob("*.parquet"))
    assert (
        result["in_process"]["encode_users_per_s"] > 0 and result["in_process"]["encode_tensorflow_xla_users_per_s"] > 0
    )
    # What the tables beyond recommendations cost: the warm job with every table against recommendations alone.
    assert result["ratios"]["extra_reasons_in_process"] > 0 and result["job_warm_top_k_alone_users_per_s"] > 0
    assert result["extras"]["every_table_seconds"] > 0 and result["extras"]["top_k_alone_seconds"] > 0
    assert set(result["peak_rss_mib"]) == {"job_cold", "job_fresh", "job_warm", "als"}
    assert all(peak["tree"] >= peak["jvm"] > 0 for peak in result["peak_rss_mib"].values())
    lake = tmp_path / "b" / "synthetic" / "data" / "lake"
    assert any((lake / "nightly" / "ds=2024-01-01" / "recommendations").glob("*.parquet"))
    # The job read its sequences as a night does: written by Spark, their schema in the files' footers.
    sequence_files = list((lake / "sessionized" / "ds=2024-01-01" / "sequences").glob("*.parquet"))
    assert len(sequence_files) == 4
    assert all(SPARK_SCHEMA_KEY in pq.read_schema(path).metadata for path in sequence_files)
    # The line is recorded as printed, with when, at which commit and on how many cores (docs/results.md).
    line = json.loads(recorded.read_text())
    assert {key: line[key] for key in result} == result and line["cores"] == os.cpu_count() and line["commit"]
