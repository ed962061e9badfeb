"""A trained model together with its vocabulary: scoring, top-K with reasons, and its on-disk form.

Scoring a batch of users (`ModelScorer`, the one path used by serving, the gate, the pyfunc and every metric): one
forward pass gives each user's vector after the last event (B, D), that step's attention row and, with the repeat
mechanism, its repeat gate and repeat row. A loaded version runs that pass in numpy (serving/numpy_encoder.py: no
TensorFlow import, no compilation, so a cold Spark worker scores at once); training's own model runs it
XLA-compiled, and so does a loaded model the numpy encoder does not cover (self-attention blocks). Then one float32
matrix multiply against the item table (D + 1, V), with the item bias folded in as a last row, gives the logits.
Without the repeat mechanism the scores are those logits; with it they are
log P(v) = log(g * repeat(v) + (1 - g) * softmax(logits)(v)) (model_lib/model/network.py). The repeat policy
(model_lib/evaluation/metrics.py) then sets the excluded items to -inf and `metrics.top_k` selects the top K.

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
from model_lib.evaluation.metrics import RepeatPolicy, older_item_pairs, top_k
from model_lib.serving.numpy_encoder import ENCODER_FILE, NumpyEncoder
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
# Users per forward pass.
ENCODE_BATCH = 512
# The folder form: every file a Recommender is made of, in the order the registry checksums them; the optional
# ones count when present (a version registered before encoder.npz existed has the same checksum as then).
KERAS_WEIGHTS = "model.weights.h5"
RECOMMENDER_FILES = ("model_config.json", KERAS_WEIGHTS, "vocabulary.parquet", ENCODER_FILE)
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


@dataclass
class LastStep:
    """What the model says after each user's last event: vectors with a trailing 1 (B, D + 1), attention row
    (B, T), repeat gate (B,) and repeat row (B, T) (zeros without the repeat mechanism), next event type
    probabilities (B, num_event_types), index 0 = padding (zeros without the event-type head), transition gate
    (B,) (zeros without the transitions)."""

    vectors: np.ndarray
    attention: np.ndarray
    gate: np.ndarray
    repeat: np.ndarray
    next_types: np.ndarray
    transition_gate: np.ndarray

    @property
    def user_vectors(self) -> np.ndarray:
        """(B, D) the users' vectors without the trailing 1 (what user profiles segment)."""
        return self.vectors[:, :-1]


class KerasForward:
    """A Keras NextItemModel's forward passes, XLA-compiled: training's validation (whose weights change between
    rounds) and models the numpy encoder does not cover. Batches are padded to a power of two (`pads_batches`) so
    that XLA compiles a handful of shapes."""

    pads_batches = True

    def __init__(self, model):
        self.model = model
        for name in ("num_items", "num_event_types", "num_gap_buckets"):
            setattr(self, name, int(getattr(model, name)))
        self.repeat_mechanism = bool(getattr(model, "repeat_mechanism", False))
        self.event_type_head = bool(getattr(model, "event_type_head", False))
        self._compiled = {}

    def item_table(self) -> np.ndarray:
        return np.asarray(self.model.item_embedding.embeddings, dtype=np.float32)

    def item_bias(self) -> np.ndarray:
        return np.asarray(self.model.item_bias, dtype=np.float32)

    def transition_table(self) -> TransitionTable | None:
        layer = getattr(self.model, "transitions", None)
        if layer is None:
            return None
        return TransitionTable.of(
            np.asarray(layer.neighbour_items), np.asarray(layer.neighbour_weights), np.asarray(layer.offset_logits)
        )

    def run(self, method: str, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The model's `method` (encode_last, encode_steps or encode_last_and_steps) on one batch."""
        if method not in self._compiled:
            self._compiled[method] = _compiled(getattr(self.model, method))
        return [np.asarray(output, dtype=np.float32) for output in self._compiled[method](batch)]


class NumpyForward:
    """The numpy encoder's forward passes (serving/numpy_encoder.py): no TensorFlow, no compilation, any batch."""

    pads_batches = False

    def __init__(self, encoder: NumpyEncoder):
        self.encoder = encoder
        for name in ("num_items", "num_event_types", "num_gap_buckets", "repeat_mechanism", "event_type_head"):
            setattr(self, name, getattr(encoder, name))

    def item_table(self) -> np.ndarray:
        return self.encoder.arrays["item_table"]

    def item_bias(self) -> np.ndarray:
        return self.encoder.arrays["item_bias"]

    def transition_table(self) -> TransitionTable | None:
        a = self.encoder.arrays
        if not self.encoder.transitions:
            return None
        return TransitionTable.of(
            a["transition_neighbour_items"], a["transition_neighbour_weights"], a["transition_offset_logits"]
        )

    def run(self, method: str, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(getattr(self.encoder, method)(batch))


@dataclass(frozen=True)
class TransitionTable:
    """The model's item-to-item transitions (network.ItemTransitions) in numpy: each item's neighbours (V, N) int32
    and their similarities (V, N), and the weights of the last `recent` steps (recent,), newest first (the softmax
    of the learned offset logits)."""

    indices: np.ndarray
    weights: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, indices: np.ndarray, weights: np.ndarray, offset_logits: np.ndarray) -> TransitionTable:
        logits = np.asarray(offset_logits, np.float64)
        offsets = np.exp(logits - logits.max())
        return cls(
            np.asarray(indices, np.int64), np.asarray(weights, np.float32), (offsets / offsets.sum()).astype(np.float32)
        )

    @property
    def recent(self) -> int:
        return len(self.offsets)

    def neighbours_of(self, recent_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(b, recent) item indices, newest first -> their neighbours (b, recent, N) and each neighbour's weight
        (similarity x the recency weight of the step it comes from) (b, recent, N)."""
        weights = self.weights[recent_items] * self.offsets[None, : recent_items.shape[1], None]
        return self.indices[recent_items], weights

    def probabilities(self, recent_items: np.ndarray, num_items: int) -> np.ndarray:
        """(b, recent) item indices, newest first (0 = none) -> (b, V) float32 P_transition, rows summing to 1 (all
        zeros where no recent item has a neighbour)."""
        rows = len(recent_items)
        neighbours, weights = self.neighbours_of(recent_items)
        flat = (np.arange(rows)[:, None, None] * num_items + neighbours).ravel()
        dense = np.bincount(flat, weights=weights.ravel(), minlength=rows * num_items).reshape(rows, num_items)
        total = weights.sum(axis=(1, 2))
        return (dense / np.where(total > 0, total, 1.0)[:, None]).astype(np.float32)


def recent_items(items: np.ndarray, last_columns: np.ndarray, recent: int) -> np.ndarray:
    """(b, T) window items and each row's step (b,) -> (b, recent) the items at that step and the ones before it,
    newest first, 0 before the window's start."""
    columns = np.asarray(last_columns)[:, None] - np.arange(recent)[None, :]
    values = np.take_along_axis(np.asarray(items), np.clip(columns, 0, None), axis=1)
    return np.where(columns >= 0, values, 0)


def forward_of(model) -> KerasForward | NumpyForward:
    """The forward passes of a model: a NumpyEncoder runs in numpy, a Keras NextItemModel under XLA."""
    return NumpyForward(model) if isinstance(model, NumpyEncoder) else KerasForward(model)


class ModelScorer:
    """Next-item scores of a model after the last event: a Keras NextItemModel (training) or its NumpyEncoder
    (a loaded version: serving, the gate, the pyfunc), through the same code below. `rankable` (V,) bool marks the
    items that may rank at all (default: every index from FIRST_ITEM_INDEX); the others get -inf."""

    def __init__(self, model, rankable: np.ndarray | None = None):
        self.forward = forward_of(model)
        self.num_items = self.forward.num_items
        self.repeat_mechanism = self.forward.repeat_mechanism
        self.event_type_head = self.forward.event_type_head
        self.transitions: TransitionTable | None = None
        self.rankable = np.arange(self.num_items) >= FIRST_ITEM_INDEX if rankable is None else rankable
        self.refresh()

    def refresh(self) -> None:
        """Re-reads the item table from the model's weights (training changes them between validations)."""
        table = self.forward.item_table()
        bias = np.where(self.rankable, self.forward.item_bias(), -np.inf)
        self.item_matrix = np.ascontiguousarray(np.vstack([table.T, bias[None, :].astype(np.float32)]))
        # Unit-length item embeddings: cosine similarity between items for the reasons (explaining_items).
        self.unit_items = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
        self.transitions = self.forward.transition_table()

    @property
    def mixes(self) -> bool:
        """True when the scores are log-probabilities (a mixture), not the network's logits."""
        return self.repeat_mechanism or self.transitions is not None

    def mix(self, logits: np.ndarray, items: np.ndarray, steps: np.ndarray, transition_gate, gate, repeat):
        """In place: (b, V) network logits of the rows' predictions after step `steps` (b,) of their window `items`
        (b, T) -> log P(v) with the transitions and the repeat mechanism the model has (unchanged without either).
        The repeat rows (b, T) must already be zero after each row's step."""
        if self.transitions is not None:
            probabilities = self.transitions.probabilities(
                recent_items(items, steps, self.transitions.recent), self.num_items
            )
            probabilities *= self.rankable
            mix_transitions(logits, transition_gate, probabilities)
        if self.repeat_mechanism:
            mix_repeats(logits, gate, repeat, items)
        return logits

    def _batched(self, method: str, inputs: dict[str, np.ndarray], batch_size: int) -> list[np.ndarray]:
        """The forward pass `method` over (B, T) inputs in batches of at most `batch_size` users -> its outputs,
        concatenated over the batches (padding rows dropped)."""
        users = len(inputs["items"])
        if self.forward.pads_batches:
            batch_size = min(batch_size, 1 << max(0, users - 1).bit_length())
        parts = []
        for start in range(0, users, batch_size):
            rows = min(batch_size, users - start)
            size = batch_size if self.forward.pads_batches else rows
            batch = {}
            for name in ("items", "event_types", "gaps"):
                padded = np.zeros((size, inputs[name].shape[1]), np.int32)
                padded[:rows] = inputs[name][start : start + rows]
                batch[name] = padded
            parts.append([output[:rows] for output in self.forward.run(method, batch)])
        return [np.concatenate(column) for column in zip(*parts, strict=True)]

    def transition_reasons(self, last: LastStep, rows: slice, items: np.ndarray, chosen: np.ndarray, scores):
        """For the users `rows` of `last` (window items (b, T)) and their recommendations `chosen` (b, K) with their
        served scores (log P): the share of each one's probability that the transitions gave (b, K), and how that
        part splits over the window's positions (b, K, T) (explaining_items). None without the transitions."""
        table = self.transitions
        if table is None or not len(chosen):
            return None
        steps = items.shape[1]
        recent = recent_items(items, np.full(len(items), steps - 1), table.recent)  # (b, recent), newest first
        neighbours, weights = table.neighbours_of(recent)  # (b, recent, N)
        total = weights.sum(axis=(1, 2))
        hits = neighbours[:, None, :, :] == chosen[:, :, None, None]  # (b, K, recent, N)
        parts = (weights[:, None] * hits).sum(axis=3) / np.where(total > 0, total, 1.0)[:, None, None]  # P_t(r) by o
        transition_probability = parts.sum(axis=2)
        gate = last.transition_gate[rows] * (1.0 - last.gate[rows])  # the repeat mixture comes on top
        with np.errstate(over="ignore", invalid="ignore"):
            share = np.clip(gate[:, None] * transition_probability / np.exp(scores.astype(np.float64)), 0.0, 1.0)
        share = np.where(np.isfinite(share), share, 0.0)
        by_position = np.zeros((*chosen.shape, steps), np.float64)
        columns = steps - 1 - np.arange(recent.shape[1])
        by_position[:, :, columns] = parts  # distinct columns, one per recent step
        by_position /= np.where(transition_probability > 0, transition_probability, 1.0)[:, :, None]
        return share, by_position

    def encode(self, inputs: dict[str, np.ndarray], batch_size: int = ENCODE_BATCH) -> LastStep:
        """(B, T) inputs -> LastStep, in batches of at most `batch_size` users."""
        if not len(inputs["items"]):
            steps = inputs["items"].shape[1] if np.ndim(inputs["items"]) == 2 else 0
            width = self.item_matrix.shape[0]
            empty_rows = np.zeros((0, steps), np.float32)
            no_types = np.zeros((0, self.forward.num_event_types), np.float32)
            no_gates = np.zeros(0, np.float32)
            return LastStep(np.zeros((0, width), np.float32), empty_rows, no_gates, empty_rows, no_types, no_gates)
        return _last_step(self._batched("encode_last", inputs, batch_size))

    def encode_steps(self, inputs: dict[str, np.ndarray], batch_size: int = ENCODE_BATCH):
        """(B, T) inputs (B > 0) -> (vectors with a trailing 1 after every step (B, T, D + 1), repeat gate (B, T),
        repeat rows (B, T, T), transition gate (B, T)): what the model predicted before each event
        (serving/anomalies.py)."""
        return _every_step(self._batched("encode_steps", inputs, batch_size))

    def encode_with_steps(self, inputs: dict[str, np.ndarray], with_steps: np.ndarray, batch_size: int = ENCODE_BATCH):
        """(B, T) inputs and (B,) bool -> (the LastStep of every row, encode_steps' outputs for the rows
        `with_steps`, None if there are none), one forward pass per row."""
        rows = np.flatnonzero(with_steps)
        if not len(rows):
            return self.encode(inputs, batch_size), None
        subset = {name: values[rows] for name, values in inputs.items()}
        columns = self._batched("encode_last_and_steps", subset, batch_size)
        with_last, others = _last_step(columns[:6]), np.flatnonzero(~with_steps)
        last = with_last
        if len(others):
            without = self.encode({name: values[others] for name, values in inputs.items()}, batch_size)
            merged = []
            for field in ("vectors", "attention", "gate", "repeat", "next_types", "transition_gate"):
                values = np.empty((len(with_steps), *getattr(with_last, field).shape[1:]), np.float32)
                values[rows], values[others] = getattr(with_last, field), getattr(without, field)
                merged.append(values)
            last = LastStep(*merged)
        return last, _every_step(columns[6:])

    def scores_into(self, last: LastStep, rows: slice, items: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The (b, V) float32 next-item scores of the users `rows` of `last`, whose window items are `items` (b, T);
        written into `out` when given (a reused block)."""
        scores = np.matmul(last.vectors[rows], self.item_matrix, out=out)
        last_columns = np.full(len(scores), items.shape[1] - 1)
        return self.mix(scores, items, last_columns, last.transition_gate[rows], last.gate[rows], last.repeat[rows])

    def score(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(B, T) inputs -> (B, V) float32 scores of the next item after the last event (-inf: never rankable)."""
        return self.scores_into(self.encode(inputs), slice(None), np.asarray(inputs["items"]))


def _compiled(function):
    """XLA-compiled (the LSTM loop runs ~1.5x faster on CPU), once per input shape: batches are padded to a power of
    two up to the batch size, so a worker compiles a handful of shapes per sequence length."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, None), tf.int32)
    return tf.function(function, input_signature=[{"items": spec, "event_types": spec, "gaps": spec}], jit_compile=True)


def _last_step(outputs: list[np.ndarray]) -> LastStep:
    """encode_last's outputs -> LastStep (the vectors with their trailing 1)."""
    vectors, *others = outputs
    return LastStep(np.hstack([vectors, np.ones((len(vectors), 1), np.float32)]), *others)


def _every_step(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """encode_steps' outputs -> (vectors with a trailing 1 (B, T, D + 1), gate, repeat rows, transition gate)."""
    vectors, gate, repeat, transition_gate = outputs
    vectors = np.concatenate([vectors, np.ones((*vectors.shape[:2], 1), np.float32)], axis=2)
    return vectors, gate, repeat, transition_gate


def _scaled_softmax(logits: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """In place: (b, V) logits -> scale (b,) x softmax(logits) over each row (-inf -> 0). Returns `logits`."""
    peak = logits.max(axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    np.subtract(logits, peak, out=logits)
    np.exp(logits, out=logits)
    logits *= (scale / np.maximum(logits.sum(axis=1), 1e-30))[:, None]
    return logits


def mix_transitions(logits: np.ndarray, gate: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """In place: (b, V) logits -> log(h * P_transition(v) + (1 - h) * softmax(logits)(v)), gate h (b,),
    P_transition (b, V) (TransitionTable.probabilities). Returns `logits`."""
    _scaled_softmax(logits, 1.0 - gate)
    logits += gate[:, None] * probabilities
    with np.errstate(divide="ignore"):
        np.log(logits, out=logits)
    return logits


def mix_repeats(logits: np.ndarray, gate: np.ndarray, repeat: np.ndarray, items: np.ndarray) -> np.ndarray:
    """In place: (b, V) logits -> log(g * repeat(v) + (1 - g) * softmax(logits)(v)), with repeat(v) the repeat row's
    weights (b, T) summed over the positions holding item v (items (b, T)). `logits` may be log-probabilities
    already (after mix_transitions): their softmax is the same distribution. Returns `logits`."""
    _scaled_softmax(logits, 1.0 - gate)
    rows = np.repeat(np.arange(len(items)), items.shape[1])
    np.add.at(logits, (rows, items.ravel()), (gate[:, None] * repeat).ravel())
    with np.errstate(divide="ignore"):
        np.log(logits, out=logits)
    return logits


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
        (folder / "model_config.json").write_text(json.dumps(config, indent=2))
        keras_model.save_weights(folder / KERAS_WEIGHTS)
        if numpy_form is not None:
            numpy_form.save(folder / ENCODER_FILE)
        vocabulary = pd.DataFrame(
            {"item_index": np.arange(self.num_items), "item_id": self.item_ids, "count": self.popularity}
        ).iloc[FIRST_ITEM_INDEX:]
        vocabulary.to_parquet(folder / "vocabulary.parquet", index=False)
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
        config = json.loads((folder / "model_config.json").read_text())
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
            pd.read_parquet(Path(folder) / "vocabulary.parquet"),
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
