"""Batch scoring inside Spark Python workers (jobs/recommend.py runs it through mapInPandas).

In the library, not in the job: under spark-submit the job file is `__main__`, which the workers cannot import, so a
function defined there cannot be sent to them by reference.

The workers never talk to MLflow: the job reads the pinned version's files once, verified against their checksum,
and broadcasts them; each Python worker loads them once (numpy, model/numpy_encoder.py) and keeps them for every
later task (Spark reuses its Python workers). So a cold worker imports numpy, pandas and this package, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from model_lib.data.splits import Sequences
from model_lib.ranking import RepeatPolicy
from model_lib.serving.anomalies import DaySurprise, day_surprise, scored_events
from model_lib.serving.recommender import SOURCE_REPEAT, Recommender

# One row per scored user: the top K best first (ids, scores, sources, each item's reason), the chance of each
# configured event type for the user's next event (null without the model's event-type head), the user's vector,
# and the user's segment of the model with its place in the segments picture (null when the model has no segments
# or profiles are not wanted). The recommend job turns it into the nightly tables (jobs/recommend.py).
SCORED_USER_SCHEMA = (
    "user_id string, item_ids array<string>, scores array<double>, sources array<string>, "
    "reason_item_ids array<string>, next_event_types array<double>, embedding array<double>, "
    "segment int, x double, y double, "
    # How surprising the user's events of the day were (serving/anomalies.py); null without a scored event that day.
    "anomaly_score double, anomaly_events int, outside_top_share double, most_surprising_item_id string"
)


# The model this Python worker process loaded, by its key: a worker serves many tasks of one run.
_LOADED: dict[str, Recommender] = {}


def loaded_recommender(key: str, files) -> Recommender:
    """The Recommender of `files` (a Broadcast of {file name: bytes}), loaded on this worker's first task for `key`
    (model name, version and checksum) and kept; a new key replaces it."""
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = Recommender.from_files(files.value)
    return _LOADED[key]


@dataclass(frozen=True)
class ScoringJob:
    """What every worker of one nightly run scores with (pickled into the mapInPandas closure).

    `model_key` names the version and its bytes, `model_files` is the Broadcast of its verified files
    (loaded_recommender). `day_item_ids` (index -> raw id of the day's vocabulary) translates the sequences into the
    model's indices. The model reads the last `window` events (seq_len) of the stored history. `day` = [start, end)
    in epoch seconds: the events whose time falls in it are the day's, scored for anomalies (outside the model's top
    `top_g` counts as a miss); None: no anomaly scores. `profiles`: assign each user to the model's segments."""

    model_key: str
    model_files: object
    k: int
    day_item_ids: np.ndarray
    policy: RepeatPolicy
    window: int
    day: tuple[int, int] | None
    top_g: int
    profiles: bool


def score_partition(batches: Iterator[pd.DataFrame], job: ScoringJob) -> Iterator[pd.DataFrame]:
    """mapInPandas body: sequence rows -> scored-user rows (SCORED_USER_SCHEMA) under the job's repeat policy. An
    item's source is `repeat` for an item the user already has an event on, else the user's source. A user with
    fewer than K candidates gets fewer items."""
    recommender = loaded_recommender(job.model_key, job.model_files)
    to_model = recommender.translation_from(job.day_item_ids)
    for batch in batches:
        if batch.empty:
            continue
        sequences = Sequences(
            batch["user_id"].to_numpy(),
            to_model[np.stack(batch["item_indices"].to_numpy())],
            np.stack(batch["event_type_indices"].to_numpy()).astype(np.int32),
            np.stack(batch["gap_buckets"].to_numpy()).astype(np.int32),
            [to_model[np.asarray(values, dtype=np.int64)] for values in batch["older_item_indices"]],
            np.stack(batch["event_times"].to_numpy()).astype(np.int64),
        ).last_events(job.window)
        inputs = sequences.model_inputs()
        # Users with events that day need every step's prediction too: one forward pass gives both.
        with_steps = np.zeros(len(batch), bool)
        if job.day is not None:
            in_day = (sequences.times >= job.day[0]) & (sequences.times < job.day[1])
            with_steps = scored_events(inputs["items"], in_day).any(axis=1)
        last, steps = recommender.scorer.encode_with_steps(inputs, with_steps)
        result = recommender.recommend(inputs, sequences.older_items, job.k, policy=job.policy, last=last)
        scored = scored_users(batch["user_id"].to_numpy(), result, recommender.item_ids)
        if job.profiles and recommender.segments is not None:
            segment, plane = recommender.segments.assign(result.user_vectors)
            scored["segment"], scored["x"], scored["y"] = segment, plane[:, 0], plane[:, 1]
        if job.day is not None:
            surprise = day_surprise(recommender.scorer, inputs, in_day, job.top_g, steps)
            scored = with_surprise(scored, surprise, recommender.item_ids)
        yield scored


def with_surprise(frame: pd.DataFrame, surprise: DaySurprise, item_ids: np.ndarray) -> pd.DataFrame:
    """The anomaly columns of SCORED_USER_SCHEMA (null for users without a scored event that day)."""
    columns = {
        "anomaly_score": surprise.score,
        "anomaly_events": surprise.events,
        "outside_top_share": surprise.outside_top_share,
        "most_surprising_item_id": item_ids[surprise.most_surprising],
    }
    for name, values in columns.items():
        column = pd.Series([None] * len(frame), dtype=object)
        column.iloc[surprise.users] = list(values)
        frame[name] = column
    return frame


# The columns filled after scored_users (segments, anomaly scores): null until then.
LATER_COLUMNS = ("segment", "x", "y", "anomaly_score", "anomaly_events", "outside_top_share", "most_surprising_item_id")


def scored_users(user_ids: np.ndarray, result, item_ids: np.ndarray) -> pd.DataFrame:
    """Recommendations (recommender.Recommendations) -> one SCORED_USER_SCHEMA row per user (LATER_COLUMNS null)."""
    listed = np.isfinite(result.scores)  # trailing -inf positions hold no item
    sources = np.where(result.repeats, SOURCE_REPEAT, result.sources[:, None])
    reasons = np.where(result.reasons >= 0, item_ids[np.maximum(result.reasons, 0)], None)

    def per_user(values: np.ndarray) -> list[np.ndarray]:
        return [row[keep] for row, keep in zip(values, listed, strict=True)]

    types = result.next_event_types
    return pd.DataFrame(
        {
            "user_id": user_ids,
            "item_ids": per_user(item_ids[result.items]),
            "scores": per_user(result.scores.astype(np.float64)),
            "sources": per_user(sources),
            "reason_item_ids": per_user(reasons),
            "next_event_types": list(types.astype(np.float64)) if types is not None else [None] * len(user_ids),
            "embedding": list(result.user_vectors.astype(np.float64)),
            **{name: [None] * len(user_ids) for name in LATER_COLUMNS},
        }
    )
