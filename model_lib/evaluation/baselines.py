"""Baselines, scored on the same hold-out with the same metrics module and repeat policy as the model.

most popular   every user gets the item counts of the training inputs
personal popularity
               the user's own items first, by how often they occur in the user's window (ties: the most recent
               first), then every other item by global popularity: the standard strongest baseline for
               re-purchase data (under exclude_seen the own items are excluded, so it equals most popular)
item-kNN       item-to-item co-occurrence over the training windows (data/cooccurrence.py): two items co-occur
               when they are at most `window` events apart in a user's history; similarity = co-occurrences /
               sqrt(count_a count_b) (cosine); a user's score for an item = sum over their last `last` items of
               similarity x recency weight (1 for the last item, 1/2 for the one before, ...), popularity breaking
               ties
ALS (implicit) Spark MLlib ALS on the (user, item) pairs of the hold-out's inputs (every event but the target,
               seen once = confidence 1 + alpha); a user's scores are user factors . item factors. Fitting on the
               inputs is what the LSTM sees at scoring time too; the target is never among them.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from model_lib.config.groups import TrainingSettings
from model_lib.contracts import FIRST_ITEM_INDEX
from model_lib.data.cooccurrence import KnnParams, co_occurrence_similarity
from model_lib.data.splits import HoldOut, Sequences
from model_lib.evaluation.metrics import evaluate_holdout, popularity_scores
from model_lib.ranking import EXCLUDE_SEEN_POLICY, RepeatPolicy, older_item_pairs

# The baselines' display names (all_baselines) and the prefix of their MLflow metrics.
METRIC_PREFIXES = {
    "most popular": "popular",
    "personal popularity": "personal_popular",
    "item-kNN": "item_knn",
    "ALS (implicit)": "als",
}
# Personal counts dominate: global popularity (scaled to below 1) only orders the items a user never had.
_TIE_BREAK = 1e-3


def _evaluate(score, holdout: HoldOut, num_items: int, policy: RepeatPolicy, extra=None, with_ranks=False, items=None):
    """The shared metrics of `score` on the hold-out; `items`: the coverage's denominator (evaluate_holdout)."""
    inputs = {**holdout.inputs.model_inputs(), **(extra or {})}
    older, targets = holdout.inputs.older_items, holdout.targets
    return evaluate_holdout(
        score, inputs, older, targets, num_items, policy=policy, with_ranks=with_ranks, catalogue_items=items
    )


def most_popular(
    train: Sequences, holdout: HoldOut, num_items: int, policy=EXCLUDE_SEEN_POLICY, with_ranks=False, items=None
) -> dict[str, float]:
    popular = popularity_scores(train.items, num_items)
    return _evaluate(
        lambda batch: np.broadcast_to(popular, (len(batch["items"]), num_items)),
        holdout,
        num_items,
        policy,
        with_ranks=with_ranks,
        items=items,
    )


def personal_popularity_scores(items: np.ndarray, popular: np.ndarray) -> np.ndarray:
    """(B, T) window items, (V,) global counts -> (B, V): own count + recency / T + scaled global popularity."""
    rows, steps = items.shape
    scores = np.broadcast_to(_TIE_BREAK * popular / max(float(popular.max()), 1.0), (rows, len(popular))).copy()
    row_index = np.repeat(np.arange(rows), steps)
    flat = items.ravel()
    real = flat >= FIRST_ITEM_INDEX
    np.add.at(scores, (row_index[real], flat[real]), 1.0)
    # The most recent position of each own item, as a fraction below 1: a later item wins a count tie.
    recency = np.zeros_like(scores)
    positions = np.tile(np.arange(1, steps + 1), rows) / (steps + 1.0)
    np.maximum.at(recency, (row_index[real], flat[real]), positions[real])
    return (scores + 0.5 * recency).astype(np.float32)


def personal_popularity(
    train: Sequences, holdout: HoldOut, num_items: int, policy=EXCLUDE_SEEN_POLICY, with_ranks=False, items=None
) -> dict[str, float]:
    popular = popularity_scores(train.items, num_items)
    score = lambda batch: personal_popularity_scores(batch["items"], popular)  # noqa: E731
    return _evaluate(score, holdout, num_items, policy, with_ranks=with_ranks, items=items)


def item_knn_scores(items: np.ndarray, similarity, popular: np.ndarray, last: int) -> np.ndarray:
    """(B, T) window items -> (B, V): recency-weighted similarity to the user's last `last` items."""
    from scipy import sparse

    rows, steps = items.shape
    recent = items[:, -last:]
    weights = 1.0 / np.arange(recent.shape[1], 0, -1)  # the last item weighs 1, the one before 1/2, ...
    real = recent >= FIRST_ITEM_INDEX
    row_index = np.repeat(np.arange(rows), recent.shape[1]).reshape(recent.shape)
    profile = sparse.coo_matrix(
        (np.broadcast_to(weights, recent.shape)[real], (row_index[real], recent[real])), (rows, similarity.shape[0])
    ).tocsr()
    scores = np.asarray((profile @ similarity).todense(), dtype=np.float32)
    return scores + _TIE_BREAK * popular / max(float(popular.max()), 1.0)


def item_knn(
    train: Sequences,
    holdout: HoldOut,
    num_items: int,
    policy: RepeatPolicy = EXCLUDE_SEEN_POLICY,
    params: KnnParams | None = None,
    with_ranks=False,
    items=None,
) -> dict[str, float]:
    params = params or KnnParams()
    popular = popularity_scores(train.items, num_items)
    similarity = co_occurrence_similarity(train.items, num_items, params.window)
    score = lambda batch: item_knn_scores(batch["items"], similarity, popular, params.last)  # noqa: E731
    return _evaluate(score, holdout, num_items, policy, with_ranks=with_ranks, items=items)


def interaction_pairs(sequences: Sequences) -> pd.DataFrame:
    """One (user row, item index) pair per distinct known item a user has, from the window and older items."""
    rows = np.repeat(np.arange(len(sequences)), sequences.items.shape[1])
    items = sequences.items.ravel()
    older_rows, older = older_item_pairs(sequences.older_items)
    pairs = pd.DataFrame(
        {"user": np.concatenate([rows, older_rows]).astype(np.int32), "item": np.concatenate([items, older])}
    )
    pairs = pairs[pairs["item"] >= FIRST_ITEM_INDEX].drop_duplicates()
    return pairs.assign(item=pairs["item"].astype(np.int32), rating=np.float32(1.0))


def als_factors(spark, pairs: pd.DataFrame, users: int, num_items: int, params: TrainingSettings):
    """Fits implicit ALS with the settings' als_* parameters; returns (users, rank) and (num_items, rank) factor arrays
    (zeros where never seen)."""
    from pyspark.ml.recommendation import ALS

    frame = spark.createDataFrame(pairs)
    als = ALS(
        rank=params.als_rank,
        regParam=params.als_reg_param,
        alpha=params.als_alpha,
        maxIter=params.als_max_iter,
        seed=params.seed,
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
    )
    model = als.fit(frame)

    def dense(factors, size: int) -> np.ndarray:
        table = factors.toPandas()
        matrix = np.zeros((size, params.als_rank), np.float32)
        if len(table):
            matrix[table["id"].to_numpy()] = np.stack(table["features"].to_numpy())
        return matrix

    return dense(model.userFactors, users), dense(model.itemFactors, num_items)


def als(
    spark,
    holdout: HoldOut,
    num_items: int,
    params: TrainingSettings,
    policy: RepeatPolicy = EXCLUDE_SEEN_POLICY,
    with_ranks=False,
    items=None,
) -> dict[str, float]:
    """ALS's metrics on the hold-out, plus its fit seconds."""
    started = time.perf_counter()
    user_factors, item_factors = als_factors(
        spark, interaction_pairs(holdout.inputs), len(holdout.targets), num_items, params
    )
    seconds = time.perf_counter() - started
    # The row numbers travel with the batches, so each batch picks its own users' factors.
    metrics = _evaluate(
        lambda batch: user_factors[batch["row"]] @ item_factors.T,
        holdout,
        num_items,
        policy,
        extra={"row": np.arange(len(holdout.targets))},
        with_ranks=with_ranks,
        items=items,
    )
    return {**metrics, "fit_seconds": seconds}


def all_baselines(
    spark, split, num_items: int, settings, with_ranks=False, catalogue_items: int | None = None
) -> dict[str, dict[str, float]]:
    """Every baseline on the split's test hold-out under the settings' repeat policy, by display name
    (ALS only with a Spark session and `als_baseline` on); each with its per-user `ranks` when `with_ranks`."""
    policy = settings.repeat_rule()
    results = {
        "most popular": most_popular(split.train, split.test, num_items, policy, with_ranks, catalogue_items),
        "personal popularity": personal_popularity(
            split.train, split.test, num_items, policy, with_ranks, catalogue_items
        ),
        "item-kNN": item_knn(split.train, split.test, num_items, policy, with_ranks=with_ranks, items=catalogue_items),
    }
    if spark is not None and settings.training.als_baseline:
        results["ALS (implicit)"] = als(
            spark, split.test, num_items, settings.training, policy, with_ranks, items=catalogue_items
        )
    return results


# --- next event type (metrics.next_type_metrics); both learn from the training pairs only ---
def type_pairs(train: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """(type of an event, type of the event after it) for every consecutive pair of the training sequences."""
    current, following = train.event_types[:, :-1].ravel(), train.event_types[:, 1:].ravel()
    real = (current > 0) & (following > 0)
    return current[real], following[real]


def majority_type(train: Sequences, holdout: HoldOut, num_types: int) -> np.ndarray:
    """Every user gets the training frequencies of next event types (add-one smoothed): (N, num_types)."""
    _, following = type_pairs(train)
    counts = np.bincount(following - 1, minlength=num_types)[:num_types] + 1.0
    return np.tile(counts / counts.sum(), (len(holdout.targets), 1))


def last_type(train: Sequences, holdout: HoldOut, num_types: int) -> np.ndarray:
    """Each user gets P(next type | type of their last event), estimated from the training pairs (add-one
    smoothed): a first-order Markov chain over event types, (N, num_types)."""
    current, following = type_pairs(train)
    transitions = np.ones((num_types, num_types))
    np.add.at(transitions, (current - 1, following - 1), 1.0)
    transitions /= transitions.sum(axis=1, keepdims=True)
    last = holdout.inputs.event_types[:, -1]
    return transitions[np.clip(last - 1, 0, num_types - 1)]
