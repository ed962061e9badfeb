"""A trained model together with its vocabulary: scoring, top-K with reasons, and its on-disk form.

The folder form (`save` / `load`) is what travels inside each registered MLflow model version:
    model_config.json   constructor arguments of NextItemModel + the event types it was trained with
    model.weights.h5    Keras weights
    vocabulary.parquet  item_index, item_id, count (index 0 = padding, 1 = unknown item)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model_lib.metrics import seen_mask, top_k_items
from model_lib.schemas import FIRST_ITEM_INDEX, PAD_INDEX, UNKNOWN_ITEM_INDEX

SOURCE_MODEL = "model"
SOURCE_POPULAR = "popular"


@dataclass
class Recommendations:
    """Per user (rows) the top-K item indices with scores, the source and the reason item index (or -1)."""

    items: np.ndarray  # (B, K) int
    scores: np.ndarray  # (B, K) float32
    sources: np.ndarray  # (B,) str
    reasons: np.ndarray  # (B,) int item index, -1 when there is no reason (popular fallback)


class Recommender:
    def __init__(self, model, vocabulary: pd.DataFrame, event_types: list[str]):
        self.model = model
        self.event_types = list(event_types)
        vocabulary = vocabulary.sort_values("item_index")
        self.num_items = int(model.num_items)
        self.item_ids = np.full(self.num_items, "", dtype=object)
        self.item_ids[vocabulary["item_index"].to_numpy()] = vocabulary["item_id"].to_numpy()
        counts = np.zeros(self.num_items, dtype=np.float32)
        counts[vocabulary["item_index"].to_numpy()] = vocabulary["count"].to_numpy()
        self.popularity = counts
        self.index_of = dict(zip(vocabulary["item_id"], vocabulary["item_index"].astype(int), strict=True))

    # --- scoring ---
    def score(self, inputs: dict[str, np.ndarray], batch_size: int = 1024) -> np.ndarray:
        """(B, T) inputs -> (B, V) float32 logits of the next item after the last event."""
        return self.score_with_attention(inputs, batch_size)[0]

    def score_with_attention(self, inputs: dict[str, np.ndarray], batch_size: int = 1024):
        scores, attention = [], []
        for start in range(0, len(inputs["items"]), batch_size):
            batch = {
                name: np.asarray(values[start : start + batch_size], dtype=np.int32) for name, values in inputs.items()
            }
            logits, weights = self.model.score_last(batch)
            scores.append(np.asarray(logits, dtype=np.float32))
            attention.append(np.asarray(weights, dtype=np.float32))
        if not scores:
            steps = inputs["items"].shape[1] if inputs["items"].ndim == 2 else 0
            return np.zeros((0, self.num_items), np.float32), np.zeros((0, steps), np.float32)
        return np.concatenate(scores), np.concatenate(attention)

    def recommend(self, inputs: dict[str, np.ndarray], older_items: list[np.ndarray], k: int) -> Recommendations:
        """Top-K unseen items per user; users with no known item in their history get the most popular ones."""
        items = np.asarray(inputs["items"])
        scores, attention = self.score_with_attention(inputs)
        # Indices without an item (padding, unknown, and any index the stable vocabulary left free) never rank.
        excluded = seen_mask(items, older_items, self.num_items) | (self.item_ids == "")[None, :]
        known = (items >= FIRST_ITEM_INDEX).any(axis=1)
        cold = ~known
        if cold.any():
            scores[cold] = self.popularity
        top = top_k_items(scores, excluded, k)
        top_scores = np.take_along_axis(scores, top, axis=1)
        # Reason: the known history item the last step attended to most.
        weights = np.where(items >= FIRST_ITEM_INDEX, attention, -1.0)
        reason_positions = weights.argmax(axis=1)
        reasons = np.where(known, items[np.arange(len(items)), reason_positions], -1)
        sources = np.where(cold, SOURCE_POPULAR, SOURCE_MODEL)
        return Recommendations(top, top_scores, sources, reasons)

    def translation_from(self, item_ids: np.ndarray) -> np.ndarray:
        """index -> raw id of another vocabulary (e.g. the day's) -> an array mapping its indices to this model's.

        The nightly sequences use the day's vocabulary, which may hold items this model never saw (they become
        unknown) or reuse an index freed since training; translating by raw id keeps every index meaning its item.
        """
        lookup = np.array([self.index_of.get(raw, UNKNOWN_ITEM_INDEX) for raw in item_ids], dtype=np.int32)
        lookup[:FIRST_ITEM_INDEX] = [PAD_INDEX, UNKNOWN_ITEM_INDEX]
        return lookup

    # --- raw ids in and out ---
    def encode_history(self, item_ids: list[str], event_types: list[str] | None, seq_len: int) -> tuple:
        """Raw item ids (oldest first) -> one left-padded row of (items, event types, gap buckets)."""
        recent = list(item_ids)[-seq_len:]
        types = list(event_types)[-seq_len:] if event_types is not None else [self.event_types[0]] * len(recent)
        row_items = np.zeros(seq_len, np.int32)
        row_types = np.zeros(seq_len, np.int32)
        row_gaps = np.zeros(seq_len, np.int32)
        offset = seq_len - len(recent)
        for position, (item, kind) in enumerate(zip(recent, types, strict=True)):
            row_items[offset + position] = self.index_of.get(item, 1)
            row_types[offset + position] = self.event_types.index(kind) + 1 if kind in self.event_types else 1
            row_gaps[offset + position] = 1 if position == 0 else 2
        return row_items, row_types, row_gaps

    # --- folder form ---
    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        config = {"model": self.model.get_config(), "event_types": self.event_types}
        config["model"].pop("name", None)
        config["model"].pop("trainable", None)
        config["model"].pop("dtype", None)
        (folder / "model_config.json").write_text(json.dumps(config, indent=2))
        self.model.save_weights(folder / "model.weights.h5")
        vocabulary = pd.DataFrame(
            {"item_index": np.arange(self.num_items), "item_id": self.item_ids, "count": self.popularity}
        ).iloc[FIRST_ITEM_INDEX:]
        vocabulary.to_parquet(folder / "vocabulary.parquet", index=False)
        return folder

    @classmethod
    def load(cls, folder: Path) -> Recommender:
        from model_lib.model import NextItemModel

        config = json.loads((Path(folder) / "model_config.json").read_text())
        model = NextItemModel(**config["model"])
        build_model(model)
        model.load_weights(Path(folder) / "model.weights.h5")
        return cls(model, pd.read_parquet(Path(folder) / "vocabulary.parquet"), config["event_types"])


def build_model(model) -> None:
    """Creates the weights by one call on a dummy batch (a subclassed model builds lazily)."""
    dummy = np.full((1, 2), PAD_INDEX, dtype=np.int32)
    model({"items": dummy, "event_types": dummy, "gaps": dummy})


# --- batch scoring inside Spark Python workers (jobs/recommend.py, mapInPandas) ---
@functools.lru_cache(maxsize=2)
def _cached_recommender(tracking_uri: str, model_name: str, version: int):
    """Loaded once per Python worker process (workers are reused across tasks)."""
    from model_lib import registry
    from model_lib.config import get_settings

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
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: sequence rows -> recommendation rows (K per user).

    `day_item_ids` (index -> raw id of the day's vocabulary) translates the sequences into the model's indices.
    """
    recommender = _cached_recommender(tracking_uri, model_name, version)
    to_model = recommender.translation_from(day_item_ids)
    for batch in batches:
        if batch.empty:
            continue
        inputs = {
            "items": to_model[np.stack(batch["item_indices"].to_numpy())],
            "event_types": np.stack(batch["event_type_indices"].to_numpy()).astype(np.int32),
            "gaps": np.stack(batch["gap_buckets"].to_numpy()).astype(np.int32),
        }
        older = [to_model[np.asarray(values, dtype=np.int64)] for values in batch["older_item_indices"]]
        result = recommender.recommend(inputs, older, k)
        users, width = len(batch), result.items.shape[1]
        reason_ids = np.where(result.reasons >= 0, recommender.item_ids[np.maximum(result.reasons, 0)], None)
        yield pd.DataFrame(
            {
                "ds": ds,
                "user_id": np.repeat(batch["user_id"].to_numpy(), width),
                "rank": np.tile(np.arange(1, width + 1, dtype=np.int32), users),
                "item_id": recommender.item_ids[result.items.ravel()],
                "score": result.scores.ravel().astype(np.float64),
                "source": np.repeat(result.sources, width),
                "reason_item_id": np.repeat(reason_ids, width),
                "model_name": model_name,
                "model_version": np.int32(version),
            }
        )
