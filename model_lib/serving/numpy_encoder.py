"""The user encoder's last step (NextItemModel.encode_last) in numpy: what the nightly scoring workers need, without
importing TensorFlow or compiling anything (issue 19: a cold worker spent ~25 s on both before its first user).

The same arithmetic as the Keras layers, in float32: the three embeddings summed and zeroed on padding; each LSTM
layer step by step (gates i, f, c, o; on a padded step the state and the output carry over, as Keras does with a
mask); then, for the last step only, the causal attention over the real steps, the tanh combination, the
projection to the user vector, and the optional event-type head and repeat mechanism. Models with self-attention
blocks (attention_blocks > 0) are not covered: `supports` says so and the caller keeps TensorFlow for them.
tests/unit/test_numpy_encoder.py holds it equal to TensorFlow's forward pass to 1e-5.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * values) + 1.0)  # the same function as 1 / (1 + e^-x), without overflow


def _masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Softmax over the allowed entries of the last axis; a row with none allowed is all zeros."""
    logits = np.where(allowed, logits, -1e9)
    logits = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    return (weights * allowed).astype(np.float32)


class NumpyEncoder:
    """A NextItemModel's weights as numpy arrays and its last-step forward pass; `arrays` as `from_model` names them."""

    def __init__(self, arrays: dict[str, np.ndarray], num_event_types: int):
        self.arrays = {name: np.asarray(values, np.float32) for name, values in arrays.items()}
        self.num_event_types = num_event_types
        self.lstm_layers = sum(1 for name in arrays if name.endswith("_recurrent"))
        self.event_type_head = "next_type_kernel" in arrays
        self.repeat_mechanism = "repeat_query" in arrays

    @staticmethod
    def supports(model) -> bool:
        return not getattr(model, "attention_blocks", 0)

    @classmethod
    def from_model(cls, model) -> NumpyEncoder:
        if not cls.supports(model):
            raise ValueError("the numpy encoder covers models without self-attention blocks (attention_blocks = 0)")

        def value(variable) -> np.ndarray:
            return np.asarray(variable, np.float32)

        arrays = {
            "item_table": value(model.item_embedding.embeddings),
            "type_table": value(model.type_embedding.embeddings),
            "gap_table": value(model.gap_embedding.embeddings),
            "attention_query": value(model.attention.query_projection.kernel),
            "attention_key": value(model.attention.key_projection.kernel),
            "combine_kernel": value(model.combine.kernel),
            "combine_bias": value(model.combine.bias),
            "projection_kernel": value(model.projection.kernel),
            "projection_bias": value(model.projection.bias),
        }
        for n, lstm in enumerate(model.lstms):
            arrays[f"lstm{n}_kernel"] = value(lstm.cell.kernel)
            arrays[f"lstm{n}_recurrent"] = value(lstm.cell.recurrent_kernel)
            arrays[f"lstm{n}_bias"] = value(lstm.cell.bias)
        if model.next_event_type is not None:
            arrays["next_type_kernel"] = value(model.next_event_type.kernel)
            arrays["next_type_bias"] = value(model.next_event_type.bias)
        if model.repeat_explore is not None:
            arrays["repeat_query"] = value(model.repeat_explore.query_projection.kernel)
            arrays["repeat_key"] = value(model.repeat_explore.key_projection.kernel)
            arrays["repeat_gate_kernel"] = value(model.repeat_explore.gate.kernel)
            arrays["repeat_gate_bias"] = value(model.repeat_explore.gate.bias)
        return cls(arrays, int(model.num_event_types))

    def lstm(self, layer: int, inputs: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(B, T, E) inputs -> (B, T, H) outputs of one LSTM layer; padded steps carry state and output over."""
        kernel, recurrent = self.arrays[f"lstm{layer}_kernel"], self.arrays[f"lstm{layer}_recurrent"]
        units = recurrent.shape[0]
        projected = inputs @ kernel + self.arrays[f"lstm{layer}_bias"]  # every step's input part at once
        hidden = np.zeros((len(inputs), units), np.float32)
        cell = np.zeros_like(hidden)
        outputs = np.empty((*inputs.shape[:2], units), np.float32)
        for step in range(inputs.shape[1]):
            gates = projected[:, step] + hidden @ recurrent
            input_gate, forget_gate = _sigmoid(gates[:, :units]), _sigmoid(gates[:, units : 2 * units])
            candidate, output_gate = np.tanh(gates[:, 2 * units : 3 * units]), _sigmoid(gates[:, 3 * units :])
            new_cell = forget_gate * cell + input_gate * candidate
            real = valid[:, step, None]
            cell = np.where(real, new_cell, cell)
            hidden = np.where(real, output_gate * np.tanh(new_cell), hidden)
            outputs[:, step] = hidden
        return outputs

    def encode_last(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """(B, T) inputs -> NextItemModel.encode_last's five outputs: user vector (B, D), attention row (B, T), repeat
        gate (B,), repeat row (B, T), next event type probabilities (B, num_event_types)."""
        a = self.arrays
        items = np.asarray(inputs["items"], np.int64)
        valid = items != 0
        embedded = (
            a["item_table"][items]
            + a["type_table"][np.asarray(inputs["event_types"], np.int64)]
            + a["gap_table"][np.asarray(inputs["gaps"], np.int64)]
        ) * valid[..., None]
        states = embedded.astype(np.float32)
        for layer in range(self.lstm_layers):
            states = self.lstm(layer, states, valid)
        last = states[:, -1]
        units = a["attention_query"].shape[1]
        keys = states @ a["attention_key"]
        logits = np.einsum("bh,bth->bt", last @ a["attention_query"], keys) / np.sqrt(np.float32(units))
        attention = _masked_softmax(logits, valid)  # the last step may look at every real step
        context = np.einsum("bt,bth->bh", attention, states)
        combined = np.tanh(np.concatenate([last, context], axis=1) @ a["combine_kernel"] + a["combine_bias"])
        vectors = combined @ a["projection_kernel"] + a["projection_bias"]
        if self.event_type_head:
            type_logits = combined @ a["next_type_kernel"] + a["next_type_bias"]
            type_logits[:, 0] = -1e9  # index 0 is padding
            next_types = _masked_softmax(type_logits, np.ones_like(type_logits, bool))
        else:
            next_types = np.zeros((len(items), self.num_event_types), np.float32)
        if not self.repeat_mechanism:
            return vectors, attention, np.zeros(len(items), np.float32), np.zeros_like(attention), next_types
        repeat_units = a["repeat_query"].shape[1]
        repeat_logits = np.einsum("bh,bth->bt", combined @ a["repeat_query"], states @ a["repeat_key"])
        repeat = _masked_softmax(repeat_logits / np.sqrt(np.float32(repeat_units)), valid)
        gate = _sigmoid(combined @ a["repeat_gate_kernel"] + a["repeat_gate_bias"])[:, 0]
        return vectors, attention, gate, repeat, next_types
