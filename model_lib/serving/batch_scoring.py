"""Batch scoring inside Spark Python workers (jobs/recommend.py runs it through mapInPandas).

In the library, not in the job: under spark-submit the job file is `__main__`, which the workers cannot import, so a
function defined there cannot be sent to them by reference. Above `registry` and `recommender` (which never import
it).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pandas as pd

from model_lib.config import get_settings
from model_lib.data.splits import Sequences
from model_lib.evaluation.metrics import RepeatPolicy
from model_lib.serving.recommender import SOURCE_REPEAT
from model_lib.storage import registry


@functools.lru_cache(maxsize=2)
def _cached_recommender(tracking_uri: str, model_name: str, version: int):
    """Loaded once per Python worker process (workers are reused across tasks)."""
    return registry.load_recommender(get_settings(mlflow_tracking_uri=tracking_uri, model_name=model_name), version)


def score_partition(
    batches: Iterator[pd.DataFrame],
    *,
    tracking_uri: str,
    model_name: str,
    version: int,
    k: int,
    ds: str,
    day_item_ids: np.ndarray,
    policy: RepeatPolicy,
    window: int,
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: sequence rows -> recommendation rows (K per user) under the repeat policy.

    `day_item_ids` (index -> raw id of the day's vocabulary) translates the sequences into the model's indices.
    A row's source is `repeat` for an item the user already has an event on, else the user's source. The model
    reads the last `window` events (seq_len) of the stored history.
    """
    recommender = _cached_recommender(tracking_uri, model_name, version)
    to_model = recommender.translation_from(day_item_ids)
    for batch in batches:
        if batch.empty:
            continue
        sequences = Sequences(
            batch["user_id"].to_numpy(),
            to_model[np.stack(batch["item_indices"].to_numpy())],
            np.stack(batch["event_type_indices"].to_numpy()).astype(np.int32),
            np.stack(batch["gap_buckets"].to_numpy()).astype(np.int32),
            [to_model[np.asarray(values, dtype=np.int64)] for values in batch["older_item_indices"]],
        ).last_events(window)
        result = recommender.recommend(sequences.model_inputs(), sequences.older_items, k, policy=policy)
        # A user with fewer than K unseen items gets fewer rows: trailing -inf positions hold no item.
        users, ranks = np.nonzero(np.isfinite(result.scores))
        reason_ids = np.where(result.reasons >= 0, recommender.item_ids[np.maximum(result.reasons, 0)], None)
        yield pd.DataFrame(
            {
                "ds": ds,
                "user_id": batch["user_id"].to_numpy()[users],
                "rank": (ranks + 1).astype(np.int32),
                "item_id": recommender.item_ids[result.items[users, ranks]],
                "score": result.scores[users, ranks].astype(np.float64),
                "source": np.where(result.repeats[users, ranks], SOURCE_REPEAT, result.sources[users]),
                "reason_item_id": reason_ids[users, ranks],
                "model_name": model_name,
                "model_version": np.int32(version),
            }
        )
