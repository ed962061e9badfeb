"""`reco bench accuracy --events DIR` end to end on a small synthetic clickstream: one JSON line, every scorer."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers.processes import run_ok

RECO = str(Path(sys.executable).parent / "reco")


@pytest.mark.slow
def test_bench_accuracy_prints_one_json_line_with_the_model_and_every_baseline(tmp_path):
    source = tmp_path / "source"
    env = {**os.environ, "RECO_DATA_DIR": str(source)}
    run_ok([RECO, "data", "synth", "--users", "300", "--items", "120", "--days", "5"], env)
    env = {
        **os.environ,
        "RECO_SEQ_LEN": "20",
        "RECO_HISTORY_LEN": "40",
        "RECO_MAX_UPDATES": "20",
        "RECO_EVAL_EVERY_UPDATES": "10",
        "RECO_EMBEDDING_DIM": "16",
        "RECO_HIDDEN_DIM": "16",
        "RECO_ALS_RANK": "8",
    }
    events = source / "lake" / "raw" / "events"
    results = tmp_path / "accuracy.jsonl"
    command = [
        RECO,
        "bench",
        "accuracy",
        "--events",
        str(events),
        "--root",
        str(tmp_path / "b"),
        "--results",
        str(results),
    ]
    stdout, _ = run_ok(command, env)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    result = json.loads(lines[0])
    recorded = json.loads(results.read_text())
    assert recorded["commit"] and {key: recorded[key] for key in result} == result  # the line, with its code version
    # Settings changed by RECO_* are listed: this run is an experiment, not the shipped defaults.
    changed = {"seq_len", "history_len", "max_updates", "eval_every_updates", "embedding_dim", "hidden_dim", "als_rank"}
    assert changed <= set(result["overrides"]) and not {"dropout", "patience", "epochs"} & set(result["overrides"])
    rule = result["rule"]
    assert rule["best_baseline"] in ("popular", "personal_popular", "item_knn", "als")
    # The verdict is judged against the strongest baseline of this run (its rule: tests/unit/test_accuracy_report.py).
    baselines = ("popular", "personal_popular", "item_knn", "als")
    assert rule["best_baseline"] == max(baselines, key=lambda name: result[name]["ndcg_10"])
    assert result["hyper_parameters"]["seq_len"] == 20 and result["hyper_parameters"]["min_item_count"] == 5
    assert result["validation_rounds"] == 2 and len(result["validation_ndcg_10_per_round"]) == 2
    assert result["updates"] == 20
    assert result["users"] > 200 and result["items"] > 50 and result["train_seconds"] > 0
    # The clickstream's cart and purchase follow a view of the same item: many targets are repeats, so `suggest`
    # (from the validation hold-out) allows repeats and the model gets its repeat mechanism.
    assert result["validation_repeat_share"] > 0.05 and result["policy"] == "allow_repeats"
    assert result["repeat_mechanism"] is True and result["test_repeat_share"] > 0.05
    # Several event types: the next event type is reported against both baselines, and injected anomalous days
    # against item popularity (figures of a 20-update model are not judged, only their presence and range).
    assert set(result["next_event_type"]) == {"LSTM + attention", "majority type", "last type (Markov)"}
    assert sum(result["anomalies"]["injected"].values()) >= 2
    assert set(result["anomalies"]["model"]) >= {"roc_auc", "precision_at_n", "roc_auc_hijack", "roc_auc_burst"}
    for scorer in ("model", "popular", "personal_popular", "item_knn", "als"):
        metrics = result[scorer]
        assert metrics["users"] == result["users"]
        assert 0 <= metrics["mrr_10"] <= metrics["ndcg_10"] <= metrics["hr_10"] <= metrics["hr_20"] <= 1
        assert 0 < metrics["coverage_10"] <= metrics["coverage_20"] <= 1
    # most-popular recommends the same list to everyone: its coverage stays far below ALS's
    assert result["popular"]["coverage_10"] < result["als"]["coverage_10"]
    # On repeat data the user's own items are the strongest simple signal.
    assert result["personal_popular"]["hr_10"] > result["popular"]["hr_10"]
