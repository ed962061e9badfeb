"""A real training run killed with SIGKILL mid-way resumes from its last checkpoint and finishes the same MLflow run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from helpers.processes import run_ok
from helpers.sequence_files import cycle_sequences
from model_lib.data.sequence_files import write_sequences

DS = "2024-03-01"
EPOCHS = 40


@pytest.mark.slow
def test_killed_training_resumes_from_the_last_checkpoint(tmp_path):
    import mlflow

    from model_lib.config import get_settings, parse_ds

    data = tmp_path / "data"
    env = {
        **os.environ,
        "RECO_DATA_DIR": str(data),
        "RECO_SEQ_LEN": "8",
        "RECO_MIN_ITEM_COUNT": "1",
        "RECO_EMBEDDING_DIM": "8",
        "RECO_HIDDEN_DIM": "8",
        "RECO_EPOCHS": str(EPOCHS),
        "RECO_PATIENCE": str(EPOCHS),
        "RECO_XLA": "false",
        "RECO_ALS_BASELINE": "false",
    }
    settings = get_settings(data_dir=data, seq_len=8)
    ds = parse_ds(DS)
    write_sequences(cycle_sequences(300, 40, 8), settings.lake.sequences_dir(ds))
    settings.lake.vocab_dir(ds).mkdir(parents=True)
    pd.DataFrame(
        {"item_id": [f"i{k}" for k in range(2, 40)], "item_index": np.arange(2, 40, dtype=np.int32), "count": 10}
    ).to_parquet(settings.lake.vocab_dir(ds) / "part-0.parquet")

    command = [sys.executable, "-m", "jobs.train", "--ds", DS]
    state_file = settings.lake.checkpoint_dir(ds) / "loop_state.json"
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and first.poll() is None:
            if state_file.exists() and len(json.loads(state_file.read_text())["history"]) >= 2:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the run ended before it could be killed:\n" + first.stdout.read()[-3000:]
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    saved = len(json.loads(state_file.read_text())["history"])
    run_id = (settings.lake.checkpoint_dir(ds) / "mlflow_run_id").read_text().strip()
    assert 2 <= saved < EPOCHS

    _, output = run_ok(command, env)
    assert f"resuming after epoch {saved}" in output
    summary = json.loads(output.split("[reco] train summary ", 1)[1].splitlines()[0])
    assert summary["run_id"] == run_id and summary["resumed_after_epoch"] == saved
    mlflow.set_tracking_uri(settings.engines.mlflow_tracking_uri)
    steps = {m.step for m in mlflow.tracking.MlflowClient().get_metric_history(run_id, "loss")}
    rounds = summary["validation_rounds"]  # 40 passes, validated at most 25 times (schedule.MAX_VALIDATIONS)
    assert steps == set(range(1, rounds + 1)) and saved < rounds
    assert not settings.lake.checkpoint_dir(ds).exists()  # registered: a re-run of the day starts afresh
