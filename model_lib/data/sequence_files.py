"""The sequence files (lake/sessionized/ds=D/sequences/, columns contracts.SEQUENCE_COLUMNS) as numpy arrays: what
training, the gate and the benchmarks read of a sessionized day. The Spark job (jobs/sessionize.py) writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from model_lib.data.splits import Sequences
from model_lib.storage.lake import read_parquet_folder


def read_sequences(source: Path | list[Path]):
    """The sequences Parquet of one ds (its folder, or some of its files) -> Sequences (aligned int32 arrays, users
    sorted by id)."""
    if isinstance(source, list | tuple):
        frame = pd.concat([pd.read_parquet(path) for path in source], ignore_index=True)
    else:
        frame = read_parquet_folder(source)
    frame = frame.sort_values("user_id", kind="stable").reset_index(drop=True)

    def stacked(column: str, dtype=np.int32) -> np.ndarray:
        return np.stack(frame[column].to_numpy()).astype(dtype) if len(frame) else np.zeros((0, 0), dtype)

    return Sequences(
        user_ids=frame["user_id"].to_numpy(dtype=object),
        items=stacked("item_indices"),
        event_types=stacked("event_type_indices"),
        gaps=stacked("gap_buckets"),
        older_items=[np.asarray(values, dtype=np.int64) for values in frame["older_item_indices"]],
        times=stacked("event_times", np.int64) if "event_times" in frame.columns else None,
    )


def write_sequences(sequences, folder: Path, files: int = 2) -> list[Path]:
    """Sequences -> `files` Parquet files (users dealt round-robin) in the sequence contract's columns, as
    lake/sessionized/ds=D/sequences/ holds them. For tests and benchmarks; the pipeline's own writer is the Spark
    job."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "user_id": sequences.user_ids,
            "item_indices": list(sequences.items),
            "event_type_indices": list(sequences.event_types),
            "gap_buckets": list(sequences.gaps),
            "older_item_indices": list(sequences.older_items),
            "length": sequences.lengths.astype(np.int32),
            # Epoch seconds per event; without times every event is at 0 (no event falls on a scored day).
            "event_times": list(sequences.times if sequences.times is not None else np.zeros_like(sequences.items)),
        }
    )
    paths = []
    for part in range(files):
        path = folder / f"part-{part:05d}.parquet"
        frame.iloc[part::files].to_parquet(path, index=False)
        paths.append(path)
    return paths
