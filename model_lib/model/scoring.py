"""Scoring a batch of users with a model (`ModelScorer`, the one path used by the training's validation, serving,
the gate, the pyfunc and every metric).

One forward pass gives each user's vector after the last event (B, D), that step's attention row and, with the repeat
mechanism, its repeat gate and repeat row. A model loaded from a registered version runs that pass in numpy
(model/numpy_encoder.py: no TensorFlow import, no compilation, so a cold Spark worker scores at once); training's own
model runs it XLA-compiled, and so does a loaded model the numpy encoder does not cover. Then one float32 matrix
multiply against the item table (D + 1, V), with the item bias folded in as a last row, gives the logits. Without
the repeat mechanism or the transitions the scores are those logits; with them they are the log-probabilities of the
mixture (model/network.py). The served list's exclusions and top-K are model_lib/ranking.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_lib.contracts import FIRST_ITEM_INDEX, MODEL_INPUTS, model_inputs
from model_lib.model.numpy_encoder import NumpyEncoder

# Users per forward pass.
ENCODE_BATCH = 512


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
    """The numpy encoder's forward passes (model/numpy_encoder.py): no TensorFlow, no compilation, any batch."""

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
    """The model's item-to-item transitions (layers.ItemTransitions) in numpy: each item's neighbours (V, N) int32
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
            for name in MODEL_INPUTS:
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
    return tf.function(function, input_signature=[model_inputs(spec, spec, spec)], jit_compile=True)


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


def type_probabilities(model):
    """holdout -> (N, E) the model's chance of each configured type for every hold-out user's next event (the
    event-type head's softmax at the last step, the padding type left out); None for a model without the head."""
    if not getattr(model, "event_type_head", False):
        return None
    scorer = ModelScorer(model)
    return lambda holdout: scorer.encode(holdout.inputs.model_inputs()).next_types[:, 1:]
