"""The item vocabulary: item_id <-> item_index, stable across days.

Items are ranked by interaction count (ties by item_id); those with at least `min_count` interactions enter, at most
`max_size` of them. An item keeps its index for as long as it stays in the vocabulary, so yesterday's sequences and
models keep meaning the same items; an index freed by an item that dropped out is given to the next newcomer, so the
index space stays bounded by max_size. Index 0 pads sequences and 1 stands for every item outside the vocabulary.

Each day's vocabulary is written to lake/sessionized/ds=D/vocab (versioned with the data) and is saved inside every
registered model, so scores always map back to real ids.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from model_lib.contracts import FIRST_ITEM_INDEX

VOCABULARY_COLUMNS = ["item_id", "item_index", "count"]


def item_counts(events: DataFrame, previous_counts: DataFrame | None = None) -> DataFrame:
    """Interactions per item_id over all history: the new events' counts plus the previous state's."""
    counts = events.groupBy("item_id").agg(F.count("*").alias("count"))
    if previous_counts is None:
        return counts
    return counts.unionByName(previous_counts).groupBy("item_id").agg(F.sum("count").cast("long").alias("count"))


def vocabulary_candidates(counts: DataFrame, min_count: int, max_size: int) -> DataFrame:
    """The items that belong in the vocabulary, most frequent first (ties by id): item_id, count. At most max_size
    rows, so only a vocabulary-sized table ever reaches the driver, however long the history
    (ranked_candidates below is the same rule in pandas)."""
    eligible = counts.where(F.col("count") >= min_count)
    return eligible.orderBy(F.col("count").desc(), F.col("item_id")).limit(max_size).select("item_id", "count")


def ranked_candidates(counts: pd.DataFrame, min_count: int, max_size: int) -> pd.DataFrame:
    """The items that belong in the vocabulary, most frequent first: item_id, count."""
    eligible = counts[counts["count"] >= min_count]
    ordered = eligible.sort_values(["count", "item_id"], ascending=[False, True], kind="stable")
    return ordered.head(max_size).reset_index(drop=True)[["item_id", "count"]]


def stable_vocabulary(candidates: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """Assigns indices to `candidates` (item_id, count; ranked), keeping every index `previous` gave a kept item.

    Newcomers, most frequent first, take the freed indices (lowest first), then fresh ones after the largest index
    ever used. Returns item_id, item_index, count sorted by item_index.
    """
    if previous is None or previous.empty:
        indices = np.arange(FIRST_ITEM_INDEX, FIRST_ITEM_INDEX + len(candidates), dtype=np.int32)
        return _frame(candidates["item_id"], indices, candidates["count"])
    previous_index = dict(zip(previous["item_id"], previous["item_index"].astype(int), strict=True))
    kept_mask = candidates["item_id"].map(previous_index).notna().to_numpy()
    kept_indices = {previous_index[item] for item in candidates.loc[kept_mask, "item_id"]}
    freed = sorted(set(previous_index.values()) - kept_indices)
    newcomers = int((~kept_mask).sum())
    next_fresh = max(previous_index.values(), default=FIRST_ITEM_INDEX - 1) + 1
    fresh = list(range(next_fresh, next_fresh + max(0, newcomers - len(freed))))
    indices = np.empty(len(candidates), dtype=np.int32)
    indices[kept_mask] = candidates.loc[kept_mask, "item_id"].map(previous_index).to_numpy()
    indices[~kept_mask] = (freed + fresh)[:newcomers]
    return _frame(candidates["item_id"], indices, candidates["count"])


def _frame(item_ids: pd.Series, indices: np.ndarray, counts: pd.Series) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"item_id": item_ids.to_numpy(dtype=object), "item_index": indices, "count": counts.to_numpy(dtype=np.int64)}
    )
    return frame.sort_values("item_index", kind="stable").reset_index(drop=True)


def catalogue_size(vocabulary: pd.DataFrame) -> int:
    """The model's number of item indices for a vocabulary: its largest index + 1 (padding and unknown included;
    free indices of items that left the vocabulary stay inside the range)."""
    return max(int(vocabulary["item_index"].max()) + 1 if len(vocabulary) else FIRST_ITEM_INDEX, FIRST_ITEM_INDEX)


def vocabulary_item_ids(vocabulary: pd.DataFrame) -> np.ndarray:
    """index -> raw item id ("" for padding, unknown and free indices)."""
    item_ids = np.full(catalogue_size(vocabulary), "", dtype=object)
    item_ids[vocabulary["item_index"].to_numpy()] = vocabulary["item_id"].to_numpy()
    return item_ids


def known_share(model_vocabulary: pd.DataFrame, event_counts: pd.DataFrame) -> float:
    """Of the events counted in `event_counts` (item_id, count), the share whose item the model's vocabulary holds.

    1.0 when there are no events: there is nothing the model could fail to know.
    """
    events = event_counts["count"].sum()
    if events == 0:
        return 1.0
    known = event_counts["item_id"].isin(set(model_vocabulary["item_id"]))
    return float(event_counts.loc[known, "count"].sum() / events)


def fit_problems(
    known: float, min_known: float, floor_setting: str, basis: str, model_event_types: list[str], event_types: list[str]
) -> list[str]:
    """Why a model cannot score data meaningfully (empty when it can): the one check the promotion gate and the
    nightly run share. `known`: the share of the events described by `basis` whose item the model knows;
    `min_known`: the floor, set by `floor_setting` (named in the message). The model must have been trained on
    exactly the configured event types."""
    problems = []
    if known < min_known:
        problems.append(
            f"it knows {known:.1%} of {basis}, below {floor_setting} {min_known:.0%}: it was trained on other items"
        )
    if list(model_event_types) != list(event_types):
        problems.append(f"it was trained on event types {list(model_event_types)}, not {list(event_types)}")
    return problems
