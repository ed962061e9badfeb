"""`reco bench accuracy --events DIR` end to end on a small synthetic clickstream: one JSON line, three scorers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from processes import run_ok

RECO = str(Path(sys.executable).parent / "reco")


@pytest.mark.slow
def test_bench_accuracy_prints_one_json_line_with_the_model_and_both_baselines(tmp_path):
    source = tmp_path / "source"
    env = {**os.environ, "RECO_DATA_DIR": str(source)}
    run_ok([RECO, "data", "synth", "--users", "300", "--items", "120", "--days", "5"], env)
    env = {
        **os.environ,
        "RECO_SEQ_LEN": "20",
        "RECO_EPOCHS": "2",
        "RECO_EMBEDDING_DIM": "16",
        "RECO_HIDDEN_DIM": "16",
        "RECO_ALS_RANK": "8",
    }
    events = source / "lake" / "raw" / "events"
    stdout, _ = run_ok([RECO, "bench", "accuracy", "--events", str(events), "--root", str(tmp_path / "b")], env)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["hyper_parameters"]["seq_len"] == 20 and result["hyper_parameters"]["min_item_count"] == 5
    assert result["epochs_run"] == 2 and len(result["validation_ndcg_10_per_epoch"]) == 2
    assert result["users"] > 200 and result["items"] > 50 and result["train_seconds"] > 0
    for scorer in ("model", "most_popular", "als"):
        metrics = result[scorer]
        assert metrics["users"] == result["users"]
        assert 0 <= metrics["mrr_10"] <= metrics["ndcg_10"] <= metrics["hr_10"] <= metrics["hr_20"] <= 1
        assert 0 < metrics["coverage_10"] <= metrics["coverage_20"] <= 1
    # most-popular recommends the same list to everyone (minus seen items): its coverage stays far below ALS's
    assert result["most_popular"]["coverage_10"] < result["als"]["coverage_10"]
