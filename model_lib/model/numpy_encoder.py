"""The user encoder of a NextItemModel in numpy: what the nightly scoring workers, the promotion gate and the pyfunc
run, without importing TensorFlow or compiling anything (issue 19: a cold worker spent ~25 s on both before its
first user).

The same arithmetic as the Keras layers (model_lib/model/network.py), in float32: the three embeddings summed and
zeroed on padding; each LSTM layer step by step (gates i, f, c, o; on a padded step the state and the output carry
over, as Keras does with a mask); the causal attention over the real steps, the tanh combination, the projection to
the user vector, and the optional event-type head, repeat mechanism and transition gate (the transition table
itself is applied by the scorer, scoring.ModelScorer). `encode_last` computes the heads for the last step
only; `encode_steps` for every step (the anomaly scores need the prediction before each event).

The arrays travel with each registered version as `encoder.npz` (`save` / `load`, beside the Keras weights), so a
worker loads them without Keras. Models with self-attention blocks (attention_blocks > 0) or NextItNet's convolutions
(encoder "nextitnet") are not covered: `supports`
says so and the caller keeps TensorFlow for them. tests/unit/test_numpy_encoder.py holds every output equal to
TensorFlow's forward pass to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ENCODER_FILE = "encoder.npz"


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * values) + 1.0)  # the same function as 1 / (1 + e^-x), without overflow


def _masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Softmax over the allowed entries of the last axis; a row with none allowed is all zeros."""
    logits = np.where(allowed, logits, np.float32(-1e9))
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    weights *= allowed
    return weights


def _dtype_of(values) -> type:
    return np.int32 if np.issubdtype(np.asarray(values).dtype, np.integer) else np.float32


def _first_real_step(valid: np.ndarray) -> np.ndarray:
    """(B, T) -> each row's first True step (T for a row without any)."""
    return np.where(valid.any(axis=1), valid.argmax(axis=1), valid.shape[1])


def keras_variables(model) -> dict:
    """The Keras variables of a NextItemModel (without self-attention blocks), by the names the encoder uses."""
    variables = {
        "item_table": model.item_embedding.embeddings,
        "item_bias": model.item_bias,
        "type_table": model.type_embedding.embeddings,
        "gap_table": model.gap_embedding.embeddings,
        "attention_query": model.attention.query_projection.kernel,
        "attention_key": model.attention.key_projection.kernel,
        "combine_kernel": model.combine.kernel,
        "combine_bias": model.combine.bias,
        "projection_kernel": model.projection.kernel,
        "projection_bias": model.projection.bias,
    }
    for n, lstm in enumerate(model.lstms):
        variables[f"lstm{n}_kernel"] = lstm.cell.kernel
        variables[f"lstm{n}_recurrent"] = lstm.cell.recurrent_kernel
        variables[f"lstm{n}_bias"] = lstm.cell.bias
    if model.next_event_type is not None:
        variables["next_type_kernel"] = model.next_event_type.kernel
        variables["next_type_bias"] = model.next_event_type.bias
    if model.repeat_explore is not None:
        variables["repeat_query"] = model.repeat_explore.query_projection.kernel
        variables["repeat_key"] = model.repeat_explore.key_projection.kernel
        variables["repeat_gate_kernel"] = model.repeat_explore.gate.kernel
        variables["repeat_gate_bias"] = model.repeat_explore.gate.bias
    if model.transitions is not None:
        variables["transition_neighbour_items"] = model.transitions.neighbour_items
        variables["transition_neighbour_weights"] = model.transitions.neighbour_weights
        variables["transition_offset_logits"] = model.transitions.offset_logits
        variables["transition_gate_kernel"] = model.transitions.gate.kernel
        variables["transition_gate_bias"] = model.transitions.gate.bias
    if model.bottleneck is not None:  # served: the latent's mean
        variables["latent_mean_kernel"] = model.bottleneck.mean.kernel
        variables["latent_mean_bias"] = model.bottleneck.mean.bias
    return variables


class NumpyEncoder:
    """A NextItemModel's weights as numpy arrays (named as `keras_variables` names them) and its forward pass.

    `config` is the model's constructor arguments (model_config.json's "model"); it carries the same attributes the
    scoring path reads from a Keras model: num_items, num_event_types, num_gap_buckets, event_type_head,
    repeat_mechanism.
    """

    def __init__(self, arrays: dict[str, np.ndarray], config: dict):
        # Item indices stay integers; every weight is float32.
        self.arrays = {name: np.ascontiguousarray(values, _dtype_of(values)) for name, values in arrays.items()}
        self.config = dict(config)
        self.num_items = len(self.arrays["item_table"])
        self.num_event_types = len(self.arrays["type_table"])
        self.num_gap_buckets = len(self.arrays["gap_table"])
        self.lstm_layers = sum(1 for name in arrays if name.endswith("_recurrent"))
        self.event_type_head = "next_type_kernel" in arrays
        self.repeat_mechanism = "repeat_query" in arrays
        self.transitions = "transition_neighbour_items" in arrays
        self._gate_major_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # --- from and to Keras, and the file form ---
    @staticmethod
    def supports(model_or_config) -> bool:
        blocks = (
            model_or_config.get("attention_blocks", 0)
            if isinstance(model_or_config, dict)
            else getattr(model_or_config, "attention_blocks", 0)
        )
        encoder = (
            model_or_config.get("encoder", "lstm")
            if isinstance(model_or_config, dict)
            else getattr(model_or_config, "encoder", "lstm")
        )
        return not blocks and encoder != "nextitnet"

    @classmethod
    def from_model(cls, model) -> NumpyEncoder:
        if not cls.supports(model):
            raise ValueError(
                "the numpy encoder covers LSTM models without self-attention blocks (attention_blocks = 0)"
            )
        from model_lib.model.network import constructor_arguments  # the model is Keras: TensorFlow is loaded

        arrays = {name: np.asarray(variable) for name, variable in keras_variables(model).items()}
        return cls(arrays, constructor_arguments(model))

    def to_model(self):
        """The Keras NextItemModel with these weights (imports TensorFlow: only for saving a loaded version)."""
        from model_lib.model.network import NextItemModel, build_model

        model = NextItemModel(**self.config)
        build_model(model)
        for name, variable in keras_variables(model).items():
            variable.assign(self.arrays[name])
        return model

    def save(self, path: Path) -> Path:
        with open(path, "wb") as file:  # np.savez would add ".npz" to a name without it
            np.savez(file, **self.arrays)
        return path

    @classmethod
    def load(cls, path: Path, config: dict) -> NumpyEncoder:
        with np.load(path, allow_pickle=False) as stored:
            return cls({name: stored[name] for name in stored.files}, config)

    # --- the forward pass ---
    def _gate_major(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One LSTM layer's kernel (4H, E), recurrent kernel (4H, H) and bias (4H, 1), transposed to gate-major rows in
        the order i, f, o, c (Keras stores i, f, c, o), the sigmoid gates' rows halved: sigmoid(x) is
        (tanh(x / 2) + 1) / 2, so one tanh over all four gates serves both functions."""
        if layer not in self._gate_major_cache:
            units = self.arrays[f"lstm{layer}_recurrent"].shape[0]
            order = np.r_[0 : 2 * units, 3 * units : 4 * units, 2 * units : 3 * units]
            scale = np.r_[np.full(3 * units, 0.5), np.ones(units)].astype(np.float32)[:, None]
            self._gate_major_cache[layer] = tuple(
                np.ascontiguousarray(self.arrays[f"lstm{layer}_{name}"].reshape(-1, 4 * units).T[order] * scale)
                for name in ("kernel", "recurrent", "bias")
            )
        return self._gate_major_cache[layer]

    def lstm(self, layer: int, inputs: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(T, E, B) inputs -> (T, H, B) outputs of one LSTM layer (time-major, one column per user); on a step where
        `valid` (B, T) is False the state and the output carry over, as Keras does with a mask.

        The users come ordered by their first real step (`_states`), so the users that have started by a step are
        the first columns: only those are computed, the others still hold the zero initial state and output (a
        left-padded window's padding costs nothing). Unit-major (H, B) state, so that each gate is a contiguous
        block of rows (user-major rows would make every gate slice strided, at twice the cost per step)."""
        kernel, recurrent, bias = self._gate_major(layer)
        steps, _, batch = inputs.shape
        units = recurrent.shape[1]
        started = np.searchsorted(_first_real_step(valid), np.arange(steps), side="right")
        real = valid.T[:, None, :].astype(np.float32)  # 0 on a padded step after the first real one: carry over
        has_gaps = [not valid[:count, step].all() for step, count in enumerate(started)]
        hidden = np.zeros((units, batch), np.float32)
        cell = np.zeros_like(hidden)
        outputs = np.zeros((steps, units, batch), np.float32)
        for step, count in enumerate(started):
            if not count:
                continue
            gates = recurrent @ hidden[:, :count]
            gates += kernel @ inputs[step][:, :count]
            gates += bias
            np.tanh(gates, out=gates)
            sigmoids = gates[: 3 * units]
            sigmoids += 1.0
            sigmoids *= 0.5
            new_cell = gates[units : 2 * units] * cell[:, :count]
            new_cell += gates[:units] * gates[3 * units :]
            new_hidden = np.tanh(new_cell)
            new_hidden *= gates[2 * units : 3 * units]
            if has_gaps[step]:  # state += real * (new - state), cheaper than np.where over a broadcast mask
                for state, new_state in ((cell[:, :count], new_cell), (hidden[:, :count], new_hidden)):
                    new_state -= state
                    new_state *= real[step][:, :count]
                    new_state += state
            cell[:, :count] = new_cell
            hidden[:, :count] = new_hidden
            outputs[step] = hidden
        return outputs

    def _states(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(B, T) inputs -> (the last LSTM layer's states (B, T, H), valid (B, T) bool)."""
        a = self.arrays
        items = np.asarray(inputs["items"], np.intp)
        valid = items != 0
        ordered = np.argsort(_first_real_step(valid), kind="stable")  # the LSTM's order (see lstm)
        valid_ordered = valid[ordered]
        # Gathered time-major, (T, B, E); the LSTM reads it as (T, E, B) through a transposed view, which the
        # matrix multiplies take without a copy.
        embedded = a["item_table"][items[ordered].T]
        embedded += a["type_table"][np.asarray(inputs["event_types"], np.intp)[ordered].T]
        embedded += a["gap_table"][np.asarray(inputs["gaps"], np.intp)[ordered].T]
        embedded *= valid_ordered.T[..., None]
        states = embedded.transpose(0, 2, 1)
        for layer in range(self.lstm_layers):
            states = self.lstm(layer, states, valid_ordered)
        # Back to one row per user in the callers' order, step by step: each step's (H, B) block transposes within
        # the cache, where one transpose of the whole (T, H, B) array strides through memory at ten times the cost.
        batch_major = np.empty((states.shape[2], states.shape[0], states.shape[1]), np.float32)
        for step, block in enumerate(states):
            batch_major[:, step] = block.T
        in_callers_order = np.empty_like(batch_major)
        in_callers_order[ordered] = batch_major
        return in_callers_order, valid

    def _heads(self, states: np.ndarray, valid: np.ndarray, queries_at: slice) -> dict[str, np.ndarray]:
        """The attention and everything after it for the steps `queries_at` (each step attends to the real steps up
        to itself): attention (B, Q, T), combined (B, Q, H), user vectors (B, Q, D), the repeat gate (B, Q) and
        repeat weights (B, Q, T) (zeros without the repeat mechanism, as the Keras model returns them)."""
        a = self.arrays
        steps = states.shape[1]
        query_states = states[:, queries_at]
        positions = np.arange(steps)[queries_at]
        allowed = (np.arange(steps)[None, :] <= positions[:, None])[None] & valid[:, None, :]

        def attend(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
            logits = np.matmul(queries, keys.transpose(0, 2, 1))
            logits /= np.sqrt(np.float32(keys.shape[2]))
            return _masked_softmax(logits, allowed)

        attention = attend(query_states @ a["attention_query"], states @ a["attention_key"])
        context = np.matmul(attention, states)
        combined = np.tanh(np.concatenate([query_states, context], axis=2) @ a["combine_kernel"] + a["combine_bias"])
        if "latent_mean_kernel" in a:
            combined = combined @ a["latent_mean_kernel"] + a["latent_mean_bias"]
        heads = {
            "attention": attention,
            "combined": combined,
            "vectors": combined @ a["projection_kernel"] + a["projection_bias"],
        }
        if self.repeat_mechanism:
            heads["repeat"] = attend(combined @ a["repeat_query"], states @ a["repeat_key"])
            heads["gate"] = _sigmoid(combined @ a["repeat_gate_kernel"] + a["repeat_gate_bias"])[..., 0]
        else:
            heads["repeat"] = np.zeros_like(attention)
            heads["gate"] = np.zeros(attention.shape[:2], np.float32)
        if self.transitions:
            logits = combined @ a["transition_gate_kernel"] + a["transition_gate_bias"]
            heads["transition_gate"] = _sigmoid(logits)[..., 0]
        else:
            heads["transition_gate"] = np.zeros(attention.shape[:2], np.float32)
        return heads

    def _last_outputs(self, heads: dict[str, np.ndarray], row: int) -> tuple[np.ndarray, ...]:
        """encode_last's six outputs from `_heads`, taking query row `row`."""
        attention = heads["attention"][:, row]
        if self.event_type_head:
            type_logits = heads["combined"][:, row] @ self.arrays["next_type_kernel"] + self.arrays["next_type_bias"]
            type_logits[:, 0] = -1e9  # index 0 is padding
            next_types = _masked_softmax(type_logits, np.ones_like(type_logits, bool))
        else:
            next_types = np.zeros((len(attention), self.num_event_types), np.float32)
        gate, repeat, transition_gate = heads["gate"][:, row], heads["repeat"][:, row], heads["transition_gate"][:, row]
        return heads["vectors"][:, row], attention, gate, repeat, next_types, transition_gate

    @staticmethod
    def _step_outputs(heads: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """encode_steps' four outputs from `_heads` over every step."""
        return heads["vectors"], heads["gate"], heads["repeat"], heads["transition_gate"]

    def encode_last(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """(B, T) inputs -> NextItemModel.encode_last's six outputs: user vector (B, D), attention row (B, T), repeat
        gate (B,), repeat row (B, T), next event type probabilities (B, num_event_types), transition gate (B,)."""
        states, valid = self._states(inputs)
        return self._last_outputs(self._heads(states, valid, slice(-1, None)), 0)

    def encode_steps(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """(B, T) inputs -> NextItemModel.encode_steps' four outputs: user vectors after every step (B, T, D),
        repeat gate (B, T), repeat rows (B, T, T), transition gate (B, T)."""
        states, valid = self._states(inputs)
        return self._step_outputs(self._heads(states, valid, slice(None)))

    def encode_last_and_steps(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """encode_last's six outputs, then encode_steps' four, from one pass."""
        states, valid = self._states(inputs)
        heads = self._heads(states, valid, slice(None))
        return (*self._last_outputs(heads, -1), *self._step_outputs(heads))
