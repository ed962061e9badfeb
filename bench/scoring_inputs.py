"""The scoring benchmark's inputs (bench/scoring.py): ML-1M's or a synthetic long-tailed catalogue's users as
sequences, and the configured model, untrained (scoring speed does not depend on the weights)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

from model_lib.config import Settings
from model_lib.contracts import FIRST_ITEM_INDEX
from model_lib.data.splits import Sequences
from model_lib.data.vocabulary import catalogue_size

DS = dt.date(2024, 1, 1)  # the scored day
K = 20  # recommendations per user


def sequences_from_interactions(users: np.ndarray, items: np.ndarray, seq_len: int) -> Sequences:
    """(user, item index) events already in time order per user -> each user's last seq_len items, left-padded, with
    the earlier ones as older items."""
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    rows = np.repeat(np.arange(len(starts)), counts)
    from_end = np.repeat(starts + counts, counts) - np.arange(len(users))  # 1 for a user's last event
    window = np.zeros((len(starts), seq_len), np.int32)
    inside = from_end <= seq_len
    window[rows[inside], seq_len - from_end[inside]] = items[inside]
    older = np.split(items[~inside].astype(np.int64), np.cumsum(np.maximum(counts - seq_len, 0))[:-1])
    return Sequences(
        np.array([f"u{user}" for user in users[starts]], dtype=object),
        window,
        np.where(window > 0, 1, 0).astype(np.int32),
        np.where(window > 0, 3, 0).astype(np.int32),
        older,
    )


def with_day(sequences: Sequences, active_share: float, seed: int = 5) -> Sequences:
    """Event times: every event before the day DS, except the last event of a random `active_share` of the users,
    which falls on DS (the users the anomaly scores read)."""
    day_start = int(dt.datetime.combine(DS, dt.time(), dt.UTC).timestamp())
    times = np.where(sequences.items > 0, day_start - 3600, 0).astype(np.int64)
    active = np.random.default_rng(seed).random(len(sequences)) < active_share
    times[active, -1] = day_start + 60
    return dataclasses.replace(sequences, times=times)


def movielens_inputs(seq_len: int) -> tuple[Sequences, pd.DataFrame]:
    from model_lib.data.sources import movielens_folder, read_movielens_ratings

    ratings = read_movielens_ratings(movielens_folder())
    ratings = ratings.sort_values(["user_id", "timestamp"], kind="stable")
    item_ids, item_index = np.unique(ratings["item_id"].to_numpy(), return_inverse=True)
    user_codes = pd.factorize(ratings["user_id"])[0]
    sequences = sequences_from_interactions(user_codes, item_index + FIRST_ITEM_INDEX, seq_len)
    counts = np.bincount(item_index, minlength=len(item_ids))
    vocabulary = pd.DataFrame(
        {"item_index": np.arange(len(item_ids)) + FIRST_ITEM_INDEX, "item_id": item_ids, "count": counts}
    )
    return sequences, vocabulary


def synthetic_inputs(users: int, items: int, seq_len: int, seed: int = 11) -> tuple[Sequences, pd.DataFrame]:
    """Histories of 5..2*seq_len events per user over a long-tailed catalogue (p ~ 1 / (rank + 10))."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 2 * seq_len + 1, users)
    popularity = 1.0 / (np.arange(items) + 10.0)
    drawn = rng.choice(items, size=int(lengths.sum()), p=popularity / popularity.sum()) + FIRST_ITEM_INDEX
    sequences = sequences_from_interactions(np.repeat(np.arange(users), lengths), drawn, seq_len)
    counts = np.bincount(drawn - FIRST_ITEM_INDEX, minlength=items)
    vocabulary = pd.DataFrame(
        {
            "item_index": np.arange(items) + FIRST_ITEM_INDEX,
            "item_id": [f"item{k}" for k in range(items)],
            "count": counts,
        }
    )
    return sequences, vocabulary


def untrained_recommender(settings: Settings, vocabulary: pd.DataFrame, spark=None, sequences: Sequences | None = None):
    """The configured model (with the repeat mechanism when the repeat policy allows repeats) and the event-type head;
    with `spark` and `sequences`, its user segments fitted on them as training fits them."""
    import keras

    from model_lib.model.steps import build_next_item_model
    from model_lib.serving import profiles
    from model_lib.serving.recommender import Recommender

    keras.utils.set_random_seed(settings.training.seed)
    model = build_next_item_model(catalogue_size(vocabulary), settings, event_type_head=True)
    recommender = Recommender(model, vocabulary, settings.sessionize.event_types, settings.repeat_rule())
    if spark is not None:
        rules = profiles.SegmentRules(settings.serving.profile_segments, settings.training.seed)
        profiles.segments_of_model(spark, recommender, sequences, settings.sessionize.seq_len, rules)
    return recommender


# --- measurements ---------------------------------------------------------------------------------------------
