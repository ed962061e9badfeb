"""Baselines, scored on the same hold-out with the same metrics module as the model.

most popular   every user gets the item counts of the training inputs
ALS (implicit) Spark MLlib ALS on the (user, item) pairs of the hold-out's inputs (every event but the target,
               seen once = confidence 1 + alpha); a user's scores are user factors . item factors. Fitting on the
               inputs is what the LSTM sees at scoring time too; the target is never among them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from model_lib.metrics import evaluate_holdout, popularity_scores
from model_lib.schemas import FIRST_ITEM_INDEX
from model_lib.splits import HoldOut, Sequences


@dataclass(frozen=True)
class AlsParams:
    rank: int = 128
    reg_param: float = 0.01
    alpha: float = 1.0
    max_iter: int = 10
    seed: int = 42


def most_popular(train: Sequences, holdout: HoldOut, num_items: int) -> dict[str, float]:
    popular = popularity_scores(train.items, num_items)
    return evaluate_holdout(
        lambda batch: np.broadcast_to(popular, (len(batch["items"]), num_items)),
        holdout.inputs.model_inputs(),
        holdout.inputs.older_items,
        holdout.targets,
        num_items,
    )


def interaction_pairs(sequences: Sequences) -> pd.DataFrame:
    """One (user row, item index) pair per distinct known item a user has, from the window and older items."""
    rows = np.repeat(np.arange(len(sequences)), sequences.items.shape[1])
    items = sequences.items.ravel()
    older_rows = np.repeat(np.arange(len(sequences)), [len(older) for older in sequences.older_items])
    older = np.concatenate(sequences.older_items) if len(sequences) else np.zeros(0, np.int64)
    pairs = pd.DataFrame(
        {"user": np.concatenate([rows, older_rows]).astype(np.int32), "item": np.concatenate([items, older])}
    )
    pairs = pairs[pairs["item"] >= FIRST_ITEM_INDEX].drop_duplicates()
    return pairs.assign(item=pairs["item"].astype(np.int32), rating=np.float32(1.0))


def als_factors(spark, pairs: pd.DataFrame, users: int, num_items: int, params: AlsParams):
    """Fits implicit ALS; returns (users, rank) and (num_items, rank) factor arrays (zeros where never seen)."""
    from pyspark.ml.recommendation import ALS

    frame = spark.createDataFrame(pairs)
    als = ALS(
        rank=params.rank,
        regParam=params.reg_param,
        alpha=params.alpha,
        maxIter=params.max_iter,
        seed=params.seed,
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
    )
    model = als.fit(frame)

    def dense(factors, size: int) -> np.ndarray:
        table = factors.toPandas()
        matrix = np.zeros((size, params.rank), np.float32)
        if len(table):
            matrix[table["id"].to_numpy()] = np.stack(table["features"].to_numpy())
        return matrix

    return dense(model.userFactors, users), dense(model.itemFactors, num_items)


def als(spark, holdout: HoldOut, num_items: int, params: AlsParams) -> dict[str, float]:
    """ALS's metrics on the hold-out, plus its fit seconds."""
    started = time.perf_counter()
    user_factors, item_factors = als_factors(
        spark, interaction_pairs(holdout.inputs), len(holdout.targets), num_items, params
    )
    seconds = time.perf_counter() - started
    # The row numbers travel with the batches, so each batch picks its own users' factors.
    inputs = {**holdout.inputs.model_inputs(), "row": np.arange(len(holdout.targets))}
    metrics = evaluate_holdout(
        lambda batch: user_factors[batch["row"]] @ item_factors.T,
        inputs,
        holdout.inputs.older_items,
        holdout.targets,
        num_items,
    )
    return {**metrics, "fit_seconds": seconds}
