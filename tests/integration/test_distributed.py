"""Multi-worker training: two real worker processes on 127.0.0.1 form a MultiWorkerMirroredStrategy cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.processes import free_port
from helpers.sequence_files import cycle_sequences
from model_lib.data.sequence_files import write_sequences

WORKER = Path(__file__).resolve().parents[1] / "helpers" / "distributed_worker.py"


@pytest.mark.slow
def test_two_workers_end_with_identical_trained_weights(tmp_path):
    import keras

    from model_lib.config import get_settings
    from model_lib.model.steps import build_next_item_model

    num_items = 30
    folder = tmp_path / "sequences"
    # Two files, so each worker trains on different users: only synchronised gradients keep them identical.
    write_sequences(cycle_sequences(200, num_items, 8), folder, files=2)
    cluster = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    root = Path(__file__).resolve().parents[2]
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}),
            "PYTHONPATH": str(root),
            "RECO_DATA_DIR": str(tmp_path / "data"),
            "CUDA_VISIBLE_DEVICES": "",
        }
        out = tmp_path / f"worker{index}.npz"
        log = (tmp_path / f"worker{index}.log").open("w")
        command = [sys.executable, str(WORKER), str(folder), str(num_items), str(out)]
        workers.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), out, log))
    try:
        for process, _, _ in workers:
            process.wait(timeout=300)
    finally:
        for process, _, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    for index, (process, _, _) in enumerate(workers):
        assert process.returncode == 0, (tmp_path / f"worker{index}.log").read_text()[-4000:]

    finals = [np.load(out) for _, out, _ in workers]
    assert all(str(final["strategy"]) == "MultiWorkerMirroredStrategy" for final in finals)
    assert all(int(final["replicas"]) == 2 for final in finals)
    names = [name for name in finals[0].files if name.startswith("arr_")]
    for name in names:
        np.testing.assert_array_equal(finals[0][name], finals[1][name])

    settings = get_settings(seq_len=8, embedding_dim=8, hidden_dim=8)
    keras.utils.set_random_seed(settings.training.seed)
    start = build_next_item_model(num_items, settings).get_weights()
    assert len(start) == len(names)
    moved = [float(np.abs(finals[0][f"arr_{i}"] - initial).max()) for i, initial in enumerate(start)]
    assert max(moved) > 1e-3, moved
