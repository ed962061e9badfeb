"""Training examples and batches: next-item pairs of every window of a user's stored history, and the epoch's
batches of rows of similar length (so little time goes into padding), the same wherever they are drawn.

Examples: every window of `seq_len` events of a user's stored history (`history_len`), the newest first and
`window_stride` apart, so a user with 2,000 events teaches more than one window. Every worker runs the same number
of steps per pass (from the Parquet row counts of all shards).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_lib.config import Settings
from model_lib.contracts import FIRST_ITEM_INDEX, PAD_INDEX
from model_lib.data.splits import Sequences, next_item_pairs
from model_lib.model.distribute import shard_files


def training_examples(files: list[Path], settings: Settings) -> int:
    """About how many training windows these sequence files give (from their `length` column only): what every
    worker's step count is computed from, so all run the same number of steps."""
    import pyarrow.parquet as pq

    lengths = np.concatenate([pq.read_table(path, columns=["length"])["length"].to_numpy() for path in files])
    inputs = np.maximum(lengths - 3, 0)  # two held-out events, and the last input has no next item
    return int(window_counts(inputs, settings.sessionize.seq_len, settings.stride).sum())


@dataclass(frozen=True)
class TrainingRows:
    """Next-item training pairs: inputs (N, T) per feature, item and event-type targets (N, T), real lengths (N,)."""

    inputs: dict[str, np.ndarray]
    item_targets: np.ndarray
    type_targets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_sequences(cls, train: Sequences, steps: int | None = None, stride: int | None = None) -> TrainingRows:
        """Next-item pairs of every window of `steps` inputs (default: the whole width), newest first and `stride`
        apart (default: `steps`), over each user's stored history."""
        inputs, item_targets, type_targets = next_item_pairs(train)
        if steps is not None and inputs["items"].shape[1] > steps:
            lengths = (inputs["items"] != PAD_INDEX).sum(axis=1)
            rows, columns = window_columns(lengths, inputs["items"].shape[1], steps, stride or steps)
            inside = columns >= 0

            def windows(values):
                return np.where(inside, values[rows[:, None], np.maximum(columns, 0)], PAD_INDEX)

            inputs = {name: windows(values) for name, values in inputs.items()}
            item_targets, type_targets = windows(item_targets), windows(type_targets)
        # A target needs some history: the first event of a window, predicted from padding, is not trained on.
        has_input = inputs["items"] != PAD_INDEX
        item_targets = np.where(has_input, item_targets, PAD_INDEX)
        type_targets = np.where(has_input, type_targets, PAD_INDEX)
        keep = (item_targets >= FIRST_ITEM_INDEX).any(axis=1)
        inputs = {name: values[keep].astype(np.int32) for name, values in inputs.items()}
        return cls(
            inputs,
            item_targets[keep].astype(np.int32),
            type_targets[keep].astype(np.int32),
            (inputs["items"] != PAD_INDEX).sum(axis=1),
        )

    def __len__(self) -> int:
        return len(self.item_targets)


def window_counts(lengths: np.ndarray, steps: int, stride: int) -> np.ndarray:
    """Training windows of `steps` per row of `lengths` real next-item pairs, `stride` apart (at least one)."""
    return 1 + np.maximum(0, -(-(lengths - steps) // stride))


def window_columns(lengths: np.ndarray, width: int, steps: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `width` columns, left-padded, with `lengths` real columns -> (window rows (W,), columns (W, steps)):
    windows ending at the last column, then `stride` earlier, until a window reaches the oldest real column.
    Columns < 0 lie before the row's start (padding)."""
    counts = window_counts(lengths, steps, stride)
    rows = np.repeat(np.arange(len(lengths)), counts)
    nth = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    ends = width - nth * stride
    return rows, ends[:, None] - steps + np.arange(steps)[None, :]


def bucket_width(steps: int) -> int:
    """Batches are trimmed to multiples of this many columns: at most ~8 shapes, so few XLA compilations."""
    return max(1, -(-steps // 8))


def epoch_batches(rows: TrainingRows, batch_size: int, batches: int, seed: int, epoch: int) -> Iterator[tuple]:
    """Exactly `batches` full batches for one epoch, the same for the same (seed, epoch) wherever it runs.

    Rows are shuffled (reshuffled again if more batches are asked for than one pass gives), sorted by length within
    pools of 32 batches, cut into batches whose order is shuffled, and each batch keeps only its last
    `width` columns (left padding), width = its longest row rounded up to a multiple of `bucket_width`.
    """
    rng = np.random.default_rng([seed, epoch])
    needed = batches * batch_size
    order = np.concatenate([rng.permutation(len(rows)) for _ in range(-(-needed // max(len(rows), 1)))])[:needed]
    pool = 32 * batch_size
    chunks = []
    for start in range(0, needed, pool):
        members = order[start : start + pool]
        members = members[np.argsort(rows.lengths[members], kind="stable")]
        chunks.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    full_width = rows.item_targets.shape[1]
    step = bucket_width(full_width)
    for position in rng.permutation(len(chunks)):
        members = chunks[position]
        width = min(full_width, max(1, -(-int(rows.lengths[members].max()) // step) * step))
        inputs = {name: values[members, -width:] for name, values in rows.inputs.items()}
        yield inputs, rows.item_targets[members, -width:], rows.type_targets[members, -width:]


def updates_per_pass(files: list[Path], rows: TrainingRows, settings: Settings, workers: int, local_replicas: int):
    """Updates per pass over the data. Every worker runs the same number: from the largest shard's window count."""
    shard_sizes = [
        training_examples(shard_files(files, index, workers), settings) if workers > 1 else len(rows)
        for index in range(workers)
    ]
    return -(-max(shard_sizes) // (settings.training.batch_size * local_replicas))
