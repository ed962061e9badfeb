"""The item vocabulary: item_id <-> item_index, stable across days.

Items are ranked by interaction count (ties by item_id); those with at least `min_count` interactions enter, at most
`max_size` of them. An item keeps its index for as long as it stays in the vocabulary, so yesterday's sequences and
models keep meaning the same items; an index freed by an item that dropped out is given to the next newcomer, so the
index space stays bounded by max_size. Index 0 pads sequences and 1 stands for every item outside the vocabulary.

Each day's vocabulary is written to lake/sessionized/ds=D/vocab (versioned with the data) and is saved inside every
registered model, so scores always map back to real ids.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from model_lib.config import SessionizeSettings
from model_lib.contracts import FIRST_ITEM_INDEX

VOCABULARY_COLUMNS = ["item_id", "item_index", "count"]


def item_counts(events: DataFrame) -> DataFrame:
    """Interactions per item_id of some events (e.g. one day's): item_id, count."""
    return events.groupBy("item_id").agg(F.count(F.lit(1)).alias("count"))


def top_item_counts(events: DataFrame, top: int) -> DataFrame:
    """Interactions per item_id of some events, the `top` most frequent (ties by id), plus one row with a null
    item_id holding the count of all the others: what reaches a driver is bounded by `top` + 1 rows however many
    distinct ids a day brings (the nightly model-fit check reads it; an id in the tail counts as unknown there)."""
    counts = item_counts(events)
    # Spark's top-K (TakeOrderedAndProject): a bounded heap per partition, not one task sorting every id.
    head = counts.orderBy(F.col("count").desc(), F.col("item_id")).limit(top)
    rest = counts.agg(F.sum("count").alias("_all")).crossJoin(head.agg(F.sum("count").alias("_head")))
    tail = rest.select(
        F.lit(None).cast("string").alias("item_id"),
        (F.col("_all") - F.coalesce(F.col("_head"), F.lit(0))).cast("long").alias("count"),
    ).where(F.col("count") > 0)
    return head.select("item_id", F.col("count").cast("long")).unionByName(tail)


def running_item_counts(
    events: DataFrame, previous_counts: DataFrame | None, ds: dt.date, min_count: int, idle_days: int
) -> DataFrame:
    """Interactions per item_id over all history, as the state keeps them: item_id, count, last_day (the newest
    arrival day of the item's events).

    Ids that never reach the vocabulary would otherwise stay forever (a producer that sends random ids). The rule:
    an item whose count is below `min_count` (so it is no vocabulary candidate) and that had no event for more than
    `idle_days` days is forgotten; if it comes back, it counts from 0. An item that once reached `min_count` is never
    forgotten, so the vocabulary is what all-time counts would give. The same rule in both modes:
      incremental (`previous_counts`: yesterday's table; `events`: the day's) — yesterday's count carries over unless
        it was below min_count and more than idle_days old; then the idle ones are pruned;
      full rebuild (`previous_counts` None; `events`: all history) — each item's arrival days split into stretches
        at gaps of more than idle_days; the count starts at the first stretch that alone reached min_count (else at
        the last stretch), and an item below min_count idle at ds is pruned.
    """
    day = F.to_date(F.col("arrival.dt"))
    today = F.lit(ds.isoformat()).cast("date")
    if previous_counts is not None:
        new = events.groupBy("item_id").agg(F.count(F.lit(1)).alias("_new"), F.max(day).alias("_new_day"))
        both = previous_counts.join(new, "item_id", "full")
        carried = F.coalesce(F.col("count"), F.lit(0)) >= min_count
        recent = F.datediff(F.coalesce(F.col("_new_day"), today), F.col("last_day")) <= idle_days
        kept = F.when(F.col("count").isNotNull() & (carried | recent), F.col("count")).otherwise(F.lit(0))
        merged = both.select(
            "item_id",
            (kept + F.coalesce(F.col("_new"), F.lit(0))).cast("long").alias("count"),
            F.greatest(F.col("last_day"), F.col("_new_day")).alias("last_day"),
        )
    else:
        per_day = events.groupBy("item_id", day.alias("day")).agg(F.count(F.lit(1)).alias("_events"))
        in_order = Window.partitionBy("item_id").orderBy("day")
        starts = F.coalesce(F.datediff(F.col("day"), F.lag("day").over(in_order)) > idle_days, F.lit(True))
        stretches = (
            per_day.withColumn("_stretch", F.sum(starts.cast("int")).over(in_order))
            .groupBy("item_id", "_stretch")
            .agg(F.sum("_events").alias("_events"), F.max("day").alias("_last"))
        )
        per_item = Window.partitionBy("item_id")
        first_big = F.min(F.when(F.col("_events") >= min_count, F.col("_stretch"))).over(per_item)
        counted_from = F.coalesce(first_big, F.max("_stretch").over(per_item))
        merged = (
            stretches.withColumn("_from", counted_from)
            .where(F.col("_stretch") >= F.col("_from"))
            .groupBy("item_id")
            .agg(F.sum("_events").cast("long").alias("count"), F.max("_last").alias("last_day"))
        )
    idle = (F.col("count") < min_count) & (F.datediff(today, F.col("last_day")) > idle_days)
    return merged.where(~idle)


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


def catalogue_items(vocabulary: pd.DataFrame) -> int:
    """The items a vocabulary holds (padding, unknown and free indices not counted): what every coverage figure
    divides by, in MLflow and in the warehouse."""
    return int((vocabulary["item_index"] >= FIRST_ITEM_INDEX).sum())


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


def new_vocabulary(counts: DataFrame, rules: SessionizeSettings, previous: pd.DataFrame | None) -> pd.DataFrame:
    """The day's vocabulary from the running item counts, indices kept stable against the previous version. Only the
    vocabulary-sized candidate list reaches the driver (at most max_vocab_size rows)."""
    candidates = vocabulary_candidates(counts, rules.min_item_count, rules.max_vocab_size).toPandas()
    return stable_vocabulary(candidates, previous)


def changed_items(previous: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    """Items whose index differs between two vocabulary versions (entered, left, or took a freed index)."""
    both = previous[["item_id", "item_index"]].merge(
        current[["item_id", "item_index"]], on="item_id", how="outer", suffixes=("_before", "_now")
    )
    return sorted(both.loc[both["item_index_before"].ne(both["item_index_now"]), "item_id"])
