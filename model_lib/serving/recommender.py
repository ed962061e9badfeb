"""A trained model together with its vocabulary: scoring, top-K with reasons, and its on-disk form.

Scoring a batch of users (`ModelScorer`, the one path used by serving, the gate, the pyfunc and every metric): one
forward pass gives each user's vector after the last event (B, D), that step's attention row and, with the repeat
mechanism, its repeat gate and repeat row. A loaded version runs that pass in numpy (model/numpy_encoder.py: no
TensorFlow import, no compilation, so a cold Spark worker scores at once); training's own model runs it
XLA-compiled, and so does a loaded model the numpy encoder does not cover (self-attention blocks). Then one float32
matrix multiply against the item table (D + 1, V), with the item bias folded in as a last row, gives the logits.
Without the repeat mechanism the scores are those logits; with it they are
log P(v) = log(g * repeat(v) + (1 - g) * softmax(logits)(v)) (model_lib/model/network.py). The repeat policy
(model_lib/ranking.py) then sets the excluded items to -inf and `ranking.top_k` selects the top K.

The folder form (`save` / `load`) is what travels inside each registered MLflow model version:
    model_config.json   format version, constructor arguments of NextItemModel, the event types it was trained
                        with, the repeat policy it was trained under
    model.weights.h5    Keras weights
    vocabulary.parquet  item_index, item_id, count (index 0 = padding, 1 = unknown item)
    encoder.npz         the same weights as numpy arrays (NumpyEncoder), for models it covers; versions
                        registered before it existed load with TensorFlow
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model_lib.contracts import FIRST_ITEM_INDEX, PAD_INDEX, UNKNOWN_ITEM_INDEX
from model_lib.model.numpy_encoder import ENCODER_FILE, NumpyEncoder
from model_lib.model.scoring import LastStep, ModelScorer
from model_lib.ranking import RepeatPolicy, older_item_pairs, top_k
from model_lib.serving.segments import Segments

SOURCE_MODEL = "model"
SOURCE_REPEAT = "repeat"  # an item the user already has an event on (allowed by the repeat policy)
SOURCE_POPULAR = "popular"
# Bumped whenever the folder form or the meaning of the model's inputs changes; a registered version written in
# another format is refused at load time instead of scoring garbage. Format 3 added the repeat mechanism and the
# repeat policy; format 2 folders read as "no repeat mechanism, exclude_seen". Format 4 added the item-to-item
# transitions (their table travels in the weights); format 2 and 3 folders read as "no transitions".
FORMAT_VERSION = 4
READABLE_FORMATS = (2, 3, 4)
# Users scored per matrix multiply: bounds the (users x catalogue) float32 score block (50k items: 50 MB).
SCORING_BATCH = 256
# The folder form: every file a Recommender is made of, in the order the registry checksums them; the optional
# ones count when present (a version registered before encoder.npz existed has the same checksum as then).
MODEL_CONFIG = "model_config.json"
KERAS_WEIGHTS = "model.weights.h5"
VOCABULARY_FILE = "vocabulary.parquet"
RECOMMENDER_FILES = (MODEL_CONFIG, KERAS_WEIGHTS, VOCABULARY_FILE, ENCODER_FILE)
OPTIONAL_RECOMMENDER_FILES = (ENCODER_FILE,)


def files_to_score(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files `Recommender.from_files` reads: with encoder.npz, not the Keras weights (the same arrays again)."""
    return {name: content for name, content in files.items() if not (name == KERAS_WEIGHTS and ENCODER_FILE in files)}


@dataclass
class Recommendations:
    """Per user (rows) the top-K item indices with scores, whether each is a repeat, the source and the reason.

    A user with fewer than K rankable items left has -inf scores in the trailing positions: those are no items.
    """

    items: np.ndarray  # (B, K) int
    scores: np.ndarray  # (B, K) float32
    repeats: np.ndarray  # (B, K) bool: the user already has an event on the item
    sources: np.ndarray  # (B,) str: model, or popular for a user with no known item
    reasons: np.ndarray  # (B, K) int: the history item explaining each recommendation (explaining_items), -1: none
    # (B, E) the chance that the user's next event is of each configured type (in the model's event-type order);
    # None when the model has no event-type head.
    next_event_types: np.ndarray | None = None
    # (B, D) each user's vector after their last event (what scores the items; user profiles cluster it).
    user_vectors: np.ndarray | None = None


def explaining_items(
    chosen: np.ndarray,
    items: np.ndarray,
    attention: np.ndarray,
    unit_items: np.ndarray,
    transitions: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The history item that explains each recommendation best under the model.

    chosen (B, K) recommended item indices; items (B, T) the window's item indices; attention (B, T) the last step's
    attention row (how much the user vector drew on each position); unit_items (V, D) unit-length item embeddings;
    transitions, for a model with them (ModelScorer.transition_reasons): each recommendation's share of its
    probability that came from the item-to-item transitions (B, K), and how that part splits over the positions
    (B, K, T), summing to 1. Returns (B, K): for each recommended item r, the window item at the position t
    maximising
        (1 - share_r) x attention[t] x (1 + cos(item_t, r)) / 2  +  share_r x transition_part_r[t]
    over the known positions (index >= FIRST_ITEM_INDEX): the network's part is an item the model both attended to
    and finds similar to r, the transitions' part the recent item whose neighbour r is. The similarity is mapped to
    [0, 1] so that the order stays meaningful when every cosine is negative (an attended dissimilar item still beats
    an ignored dissimilar one). A recommended repeat is explained by itself when the model attended to it (cosine
    1). Ties go to the earliest position; -1 for a user without a known item. Cost K x T x D per user.
    """
    known = items >= FIRST_ITEM_INDEX
    # Batched BLAS matmul: ~6x faster than the same einsum here.
    similarity = np.matmul(unit_items[chosen], unit_items[items].transpose(0, 2, 1))
    weight = attention[:, None, :] * (1.0 + similarity) * 0.5
    if transitions is not None:
        share, parts = transitions
        weight = (1.0 - share)[:, :, None] * weight + share[:, :, None] * parts
    weight = np.where(known[:, None, :], weight, -np.inf)
    reasons = np.take_along_axis(items, weight.argmax(axis=2), axis=1)
    return np.where(known.any(axis=1)[:, None], reasons, -1)


def repeat_flags(chosen: np.ndarray, items: np.ndarray, older_items: list[np.ndarray]) -> np.ndarray:
    """(B, K) chosen item indices -> (B, K) bool: the user already has an event on the item (window or older)."""
    flags = (chosen[:, :, None] == items[:, None, :]).any(axis=2)
    older_rows, older = older_item_pairs(older_items)
    if len(older):
        # One membership test of (row, item) pairs for the whole batch: a test per user cost 8% of the scoring.
        width = int(max(chosen.max(initial=0), older.max())) + 1
        flags |= np.isin(np.arange(len(chosen))[:, None] * width + chosen, older_rows * width + older)
    return flags & (chosen >= FIRST_ITEM_INDEX)


class Recommender:
    """`model`: a Keras NextItemModel (just trained) or a NumpyEncoder (a loaded version whose network it covers)."""

    def __init__(self, model, vocabulary: pd.DataFrame, event_types: list[str], policy: RepeatPolicy | None = None):
        self.model = model
        self.event_types = list(event_types)
        self.policy = policy or RepeatPolicy()
        vocabulary = vocabulary.sort_values("item_index")
        self.num_items = int(model.num_items)
        self.item_ids = np.full(self.num_items, "", dtype=object)
        self.item_ids[vocabulary["item_index"].to_numpy()] = vocabulary["item_id"].to_numpy()
        counts = np.zeros(self.num_items, dtype=np.float32)
        counts[vocabulary["item_index"].to_numpy()] = vocabulary["count"].to_numpy()
        self.popularity = counts
        self.index_of = dict(zip(vocabulary["item_id"], vocabulary["item_index"].astype(int), strict=True))
        # Padding, unknown, and any index the stable vocabulary left free never rank: their bias is -inf.
        rankable = self.item_ids != ""
        rankable[:FIRST_ITEM_INDEX] = False
        self.scorer = ModelScorer(model, rankable)
        self.popular_scores = np.where(rankable, counts, -np.inf).astype(np.float32)
        # The version's user segments (serving/segments.py), fitted when it is trained; None before that.
        self.segments: Segments | None = None

    # --- scoring ---
    def score(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(B, T) inputs -> (B, V) float32 scores of the next item after the last event (-inf: never rankable)."""
        return self.scorer.score(inputs)

    def recommend(
        self,
        inputs: dict[str, np.ndarray],
        older_items: list[np.ndarray],
        k: int,
        timings: dict | None = None,
        policy: RepeatPolicy | None = None,
        last: LastStep | None = None,
    ) -> Recommendations:
        """Top-K items per user under the repeat policy (default: the one the model was trained under); users with
        no known item in their history get the most popular ones.

        `timings`, when given, accumulates the seconds of each phase: encode, multiply, top_k, reasons (benchmarks).
        `last`, when given, is the users' forward pass already made (ModelScorer.encode_with_steps).
        """
        policy = policy or self.policy
        clock = _PhaseClock(timings)
        items = np.asarray(inputs["items"])
        types = np.asarray(inputs["event_types"])
        last = self.scorer.encode(inputs) if last is None else last
        clock.lap("encode")
        known = (items >= FIRST_ITEM_INDEX).any(axis=1)
        top_items, top_scores, top_reasons = [], [], []
        # One score block reused for every batch: a fresh 50 MB array per batch would be fresh pages to fault in.
        block = np.empty((SCORING_BATCH, self.num_items), np.float32)
        for start in range(0, len(items), SCORING_BATCH):
            window = slice(start, start + SCORING_BATCH)
            size = len(items[window])
            scores = self.scorer.scores_into(last, window, items[window], out=block[:size])
            clock.lap("multiply")
            scores[~known[window]] = self.popular_scores
            policy.exclude(scores, items[window], types[window], older_items[window])
            chosen, values = top_k(scores, k)
            top_items.append(chosen)
            top_scores.append(values)
            clock.lap("top_k")
            explained = self.scorer.transition_reasons(last, window, items[window], chosen, values)
            reasons = explaining_items(chosen, items[window], last.attention[window], self.scorer.unit_items, explained)
            top_reasons.append(reasons)
            clock.lap("reasons")
        width = min(k, self.num_items)
        top = np.concatenate(top_items) if top_items else np.zeros((0, width), np.int64)
        scores = np.concatenate(top_scores) if top_scores else np.zeros((0, width), np.float32)
        reasons = np.concatenate(top_reasons) if top_reasons else np.zeros((0, width), np.int64)
        sources = np.where(known, SOURCE_MODEL, SOURCE_POPULAR)
        repeats = repeat_flags(top, items, older_items) & np.isfinite(scores)
        next_types = last.next_types[:, 1:] if self.scorer.event_type_head else None
        return Recommendations(top, scores, repeats, sources, reasons, next_types, last.user_vectors)

    def translation_from(self, item_ids: np.ndarray) -> np.ndarray:
        """index -> raw id of another vocabulary (e.g. the day's) -> an array mapping its indices to this model's.

        The nightly sequences use the day's vocabulary, which may hold items this model never saw (they become
        unknown) or reuse an index freed since training; translating by raw id keeps every index meaning its item.
        """
        lookup = np.array([self.index_of.get(raw, UNKNOWN_ITEM_INDEX) for raw in item_ids], dtype=np.int32)
        lookup[:FIRST_ITEM_INDEX] = [PAD_INDEX, UNKNOWN_ITEM_INDEX]
        return lookup

    # --- raw ids in and out ---
    def encode_history(
        self, item_ids: list[str], event_types: list[str] | None, timestamps: list | None, seq_len: int
    ) -> tuple:
        """Raw item ids (oldest first), optional aligned event types and timestamps -> one left-padded row of
        (items, event types, gap buckets).

        Without event types every event counts as the first configured type; without timestamps the gaps are
        approximated (the first event, then "within a second").
        """
        recent = list(item_ids)[-seq_len:]
        types = list(event_types)[-seq_len:] if event_types is not None else [self.event_types[0]] * len(recent)
        if timestamps is not None:
            gaps = gap_buckets(list(timestamps)[-seq_len:], self.scorer.forward.num_gap_buckets - 1)
        else:
            gaps = np.array([1] + [2] * (len(recent) - 1), np.int32)[: len(recent)]
        if not len(types) == len(gaps) == len(recent):
            raise ValueError("history, event_types and timestamps must have the same length")
        offset = seq_len - len(recent)
        row_items = np.zeros(seq_len, np.int32)
        row_types = np.zeros(seq_len, np.int32)
        row_gaps = np.zeros(seq_len, np.int32)
        row_items[offset:] = [self.index_of.get(item, UNKNOWN_ITEM_INDEX) for item in recent]
        row_types[offset:] = [self.event_types.index(kind) + 1 if kind in self.event_types else 1 for kind in types]
        row_gaps[offset:] = gaps
        return row_items, row_types, row_gaps

    # --- folder form ---
    def save(self, folder: Path) -> Path:
        from model_lib.model.network import constructor_arguments

        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(self.model, NumpyEncoder):  # a loaded version: its Keras weights are rebuilt from the arrays
            numpy_form, keras_model = self.model, self.model.to_model()
        else:
            keras_model = self.model
            numpy_form = NumpyEncoder.from_model(keras_model) if NumpyEncoder.supports(keras_model) else None
        config = {
            "format": FORMAT_VERSION,
            "model": constructor_arguments(keras_model),
            "event_types": self.event_types,
            "repeat_policy": {"name": self.policy.name, "repeatable_types": list(self.policy.repeatable_types)},
        }
        if self.segments is not None:
            config["segments"] = self.segments.to_config()
        (folder / MODEL_CONFIG).write_text(json.dumps(config, indent=2))
        keras_model.save_weights(folder / KERAS_WEIGHTS)
        if numpy_form is not None:
            numpy_form.save(folder / ENCODER_FILE)
        vocabulary = pd.DataFrame(
            {"item_index": np.arange(self.num_items), "item_id": self.item_ids, "count": self.popularity}
        ).iloc[FIRST_ITEM_INDEX:]
        vocabulary.to_parquet(folder / VOCABULARY_FILE, index=False)
        return folder

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> Recommender:
        """`load` of the folder form held in memory, {file name: bytes} (what the nightly job ships to workers)."""
        with tempfile.TemporaryDirectory(prefix="reco-recommender-") as folder:
            for name, content in files.items():
                (Path(folder) / name).write_bytes(content)
            return cls.load(Path(folder))  # reads every file into memory

    @classmethod
    def load(cls, folder: Path) -> Recommender:
        """In numpy when the folder has encoder.npz (no TensorFlow import), else the Keras network."""
        folder = Path(folder)
        config = json.loads((folder / MODEL_CONFIG).read_text())
        if config.get("format") not in READABLE_FORMATS:
            raise IncompatibleModelError(
                f"the model in {folder} has format {config.get('format')}, this code reads formats {READABLE_FORMATS}: "
                "retrain it (reco_training) or score it with the code version in its `code_version` tag"
            )
        if (folder / ENCODER_FILE).exists():
            model = NumpyEncoder.load(folder / ENCODER_FILE, config["model"])
        else:
            from model_lib.model.network import NextItemModel, build_model

            model = NextItemModel(**config["model"])
            build_model(model)
            model.load_weights(folder / KERAS_WEIGHTS)
        policy = config.get("repeat_policy", {})
        recommender = cls(
            model,
            pd.read_parquet(Path(folder) / VOCABULARY_FILE),
            config["event_types"],
            RepeatPolicy(policy.get("name", RepeatPolicy.name), tuple(policy.get("repeatable_types", ()))),
        )
        if "segments" in config:  # versions trained before segments existed have none
            recommender.segments = Segments.from_config(config["segments"])
        return recommender


class _PhaseClock:
    """Adds the seconds since the previous lap to timings[phase]; does nothing without a timings dict."""

    def __init__(self, timings: dict | None):
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[phase] = self.timings.get(phase, 0.0) + now - self.last
            self.last = now


class IncompatibleModelError(RuntimeError):
    """A registered model this code cannot score correctly."""


def gap_buckets(timestamps: list, max_bucket: int) -> np.ndarray:
    """Timestamps (ISO-8601 strings or datetimes, oldest first) -> gap buckets exactly as `events.gap_bucket`
    computes them in Spark: 1 for the first event, else 2 + floor(log2(1 + gap seconds)), capped at max_bucket."""
    seconds = pd.to_datetime(pd.Series(timestamps), utc=True, format="ISO8601").astype("int64").to_numpy() / 1e9
    return gap_buckets_of_seconds(seconds, max_bucket)


def gap_buckets_of_seconds(seconds: np.ndarray, max_bucket: int) -> np.ndarray:
    """Event times in epoch seconds (oldest first) -> their gap buckets (see gap_buckets)."""
    gaps = np.maximum(np.diff(np.asarray(seconds, np.float64)), 0.0)
    buckets = np.minimum(np.floor(np.log2(gaps + 1.0)).astype(np.int32) + 2, max_bucket)
    return np.concatenate([[1], buckets]).astype(np.int32)[: len(seconds)]
