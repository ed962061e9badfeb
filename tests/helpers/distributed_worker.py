"""One worker of the multi-worker test (tests/integration/test_distributed.py): TF_CONFIG comes from the environment.

usage: python tests/helpers/distributed_worker.py SEQUENCES_DIR NUM_ITEMS OUT.npz
Trains a tiny model for a few steps with the real trainer and saves the final weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from model_lib.config import get_settings
from model_lib.model.training import train_next_item_model
from model_lib.storage.lake import parquet_files


def main(folder: str, num_items: str, out: str) -> None:
    settings = get_settings(
        seq_len=8, min_item_count=1, embedding_dim=8, hidden_dim=8, batch_size=16, epochs=2, patience=5, xla=False
    )
    result = train_next_item_model(
        parquet_files(Path(folder)), int(num_items), settings, max_steps_per_epoch=3, verbose=0
    )
    np.savez(out, *result.model.get_weights(), strategy=result.strategy, replicas=result.replicas)
    print(f"worker done: {result.strategy} x{result.replicas}, {len(result.history)} epochs", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
