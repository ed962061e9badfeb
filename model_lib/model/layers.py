"""The Keras layers the next-item model is made of (model/network.py puts them together). Each takes and returns
(B, T, ...) tensors, handles padding explicitly (`valid`, never an implicit Keras mask past its input) and has a
get_config, so a saved model rebuilds from its JSON config; shapes are in each docstring."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from model_lib.config.groups import ModelSettings

# The constructors' defaults are the shipped settings' (model_lib/config/groups.py), so each is written once; a saved
# model stores every argument it was built with (get_config), so a default may change without changing a saved one.
SHIPPED = ModelSettings()

PACKAGE = "reco"
# What reads the embedded events before the attention (`encoder`, one of config's ENCODERS): the LSTM; NextItNet's
# stack of dilated causal convolutions (a convolutional, autoregressive encoder); or the LSTM with a variational
# bottleneck after the attention (a sequential VAE, SVAE-style: the state becomes a Gaussian latent, sampled in
# training, its mean served).
# NextItNet's residual blocks: each two convolutions of kernel 3 with dilations (d, 2d); two stacks of d = 1, 4 see
# 1 + 2 x 2 x (1 + 2 + 4 + 8) = 61 steps back, more than the default window of 50.
NEXTITNET_DILATIONS = (1, 4, 1, 4)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CausalAttention(layers.Layer):
    """Scaled dot-product attention of each step over itself and the steps before it.

    Inputs: `states` (B, T, H) and `valid` (B, T) bool, true for real events (false for padding).
    Returns `context` (B, T, H) and `weights` (B, T, T); weights[b, t, j] = 0 for j > t or padded j. A padded
    query row (all its keys masked) gets all-zero weights instead of NaN.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True  # padding arrives explicitly as `valid`; the implicit Keras mask stops here
        self.query_projection = layers.Dense(units, use_bias=False, name="query")
        self.key_projection = layers.Dense(units, use_bias=False, name="key")

    def call(self, states, valid, mask=None):
        queries = self.query_projection(states)
        keys = self.key_projection(states)
        # float32 softmax: -1e9 masking overflows float16 under a mixed-precision policy.
        logits = ops.cast(ops.matmul(queries, ops.transpose(keys, (0, 2, 1))), "float32") / ops.sqrt(
            ops.cast(self.units, "float32")
        )
        weights = masked_softmax(logits, causal_validity(valid))
        return ops.matmul(ops.cast(weights, states.dtype), states), weights

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def causal_validity(valid):
    """(B, T) bool real-event flags -> (B, T, T) bool: step t may look at step j when j <= t and j is real."""
    steps = ops.shape(valid)[1]
    causal = ops.tril(ops.ones((steps, steps), dtype="bool"))
    return ops.logical_and(causal[None, :, :], ops.cast(valid, "bool")[:, None, :])


def masked_softmax(logits, allowed):
    """Softmax over the last axis of the allowed entries only (float32); a row with none allowed is all zeros."""
    logits = ops.where(allowed, ops.cast(logits, "float32"), ops.full_like(ops.cast(logits, "float32"), -1e9))
    return ops.softmax(logits, axis=-1) * ops.cast(allowed, "float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class CausalSelfAttentionBlock(layers.Layer):
    """A pre-norm transformer block whose attention looks only at each step's real past.

    Inputs: `states` (B, T, H) and `valid` (B, T) bool. Returns the new states (B, T, H), zero at padded steps,
    and the attention weights averaged over the heads (B, T, T), weights[b, t, j] = 0 for j > t or padded j.
        x = states + dropout(MultiHeadCausalAttention(LayerNorm(states)))
        x = x + dropout(W2 relu(W1 LayerNorm(x)))          W1: H -> 4H, W2: 4H -> H
    """

    def __init__(self, units: int, heads: int = SHIPPED.attention_heads, dropout: float = SHIPPED.dropout, **kwargs):
        super().__init__(**kwargs)
        if units % heads:
            raise ValueError(f"{units} units do not split into {heads} attention heads")
        self.units, self.heads, self.dropout_rate = units, heads, dropout
        self.supports_masking = True
        self.attention_norm = layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.query_projection = layers.Dense(units, use_bias=False, name="query")
        self.key_projection = layers.Dense(units, use_bias=False, name="key")
        self.value_projection = layers.Dense(units, use_bias=False, name="value")
        self.output_projection = layers.Dense(units, name="attention_output")
        self.feed_forward_norm = layers.LayerNormalization(epsilon=1e-6, name="feed_forward_norm")
        self.feed_forward_in = layers.Dense(4 * units, activation="relu", name="feed_forward_in")
        self.feed_forward_out = layers.Dense(units, name="feed_forward_out")
        self.attention_dropout = layers.Dropout(dropout)
        self.feed_forward_dropout = layers.Dropout(dropout)

    def split_heads(self, values):
        """(B, T, H) -> (B, heads, T, H / heads)"""
        batch, steps = ops.shape(values)[0], ops.shape(values)[1]
        return ops.transpose(ops.reshape(values, (batch, steps, self.heads, self.units // self.heads)), (0, 2, 1, 3))

    def call(self, states, valid, training=False, mask=None):
        normed = self.attention_norm(states)
        queries, keys, values = (
            self.split_heads(projection(normed))
            for projection in (self.query_projection, self.key_projection, self.value_projection)
        )
        scale = ops.sqrt(ops.cast(self.units // self.heads, "float32"))
        logits = ops.cast(ops.matmul(queries, ops.transpose(keys, (0, 1, 3, 2))), "float32") / scale
        weights = masked_softmax(logits, causal_validity(valid)[:, None, :, :])  # (B, heads, T, T)
        context = ops.matmul(ops.cast(weights, values.dtype), values)
        batch, steps = ops.shape(states)[0], ops.shape(states)[1]
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, steps, self.units))
        states = states + self.attention_dropout(self.output_projection(context), training=training)
        hidden = self.feed_forward_in(self.feed_forward_norm(states))
        states = states + self.feed_forward_dropout(self.feed_forward_out(hidden), training=training)
        return states * ops.cast(valid, states.dtype)[..., None], ops.mean(weights, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units, "heads": self.heads, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DilatedCausalBlock(layers.Layer):
    """NextItNet's residual block: two dilated causal convolutions over each step and the steps before it.

    Inputs: `states` (B, T, H) and `valid` (B, T) bool. Returns the new states (B, T, H), zero at padded steps:
        x = states + ReLU(LayerNorm(conv_2d(ReLU(LayerNorm(conv_d(states))))))     kernel 3, dilation d then 2d
    Causal: step t reads steps t, t - d, t - 2d (left padding is zeros, so it adds nothing).
    """

    def __init__(self, units: int, dilation: int, **kwargs):
        super().__init__(**kwargs)
        self.units, self.dilation = units, dilation
        self.supports_masking = True
        self.first = layers.Conv1D(units, 3, padding="causal", dilation_rate=dilation, name="first")
        self.first_norm = layers.LayerNormalization(epsilon=1e-6, name="first_norm")
        self.second = layers.Conv1D(units, 3, padding="causal", dilation_rate=2 * dilation, name="second")
        self.second_norm = layers.LayerNormalization(epsilon=1e-6, name="second_norm")

    def call(self, states, valid, mask=None):
        hidden = ops.relu(self.first_norm(self.first(states)))
        hidden = ops.relu(self.second_norm(self.second(hidden)))
        return (states + hidden) * ops.cast(valid, states.dtype)[..., None]

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dilation": self.dilation}


@keras.saving.register_keras_serializable(package=PACKAGE)
class VariationalBottleneck(layers.Layer):
    """The sequential VAE's latent: each step's state becomes a Gaussian N(mean, exp(log_variance)).

    Input `states` (B, T, H). Returns (z (B, T, H): a sample in training, the mean otherwise; the KL divergence from
    N(0, I) per step (B, T) float32, which the loss weighs by `kl_weight`).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True
        self.mean = layers.Dense(units, name="latent_mean")
        self.log_variance = layers.Dense(units, name="latent_log_variance")
        self.noise = keras.random.SeedGenerator(17)

    def call(self, states, training=False, mask=None):
        mean = self.mean(states)
        log_variance = ops.clip(ops.cast(self.log_variance(states), "float32"), -10.0, 10.0)
        mean32 = ops.cast(mean, "float32")
        kl = -0.5 * ops.sum(1.0 + log_variance - ops.square(mean32) - ops.exp(log_variance), axis=-1)
        if not training:
            return mean, kl
        noise = keras.random.normal(ops.shape(mean32), seed=self.noise)
        return ops.cast(mean32 + ops.exp(0.5 * log_variance) * noise, mean.dtype), kl

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RepeatExplore(layers.Layer):
    """The repeat/explore mechanism: how much of the next-item probability goes to the user's own history items,
    and to which of them.

    Inputs: `combined` (B, T, H) the per-step state, `states` (B, T, H) the LSTM states the repeat attention points
    at, `valid` (B, T) bool. Returns `gate` (B, T) float32 in (0, 1) (the repeat share) and `weights` (B, T, T)
    float32, rows summing to 1 over the real steps j <= t (all zeros for a padded row).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True
        self.query_projection = layers.Dense(units, use_bias=False, name="repeat_query")
        self.key_projection = layers.Dense(units, use_bias=False, name="repeat_key")
        # Starts at g = sigmoid(-2) ~ 0.12: explore first, and let the data teach the repeat share.
        self.gate = layers.Dense(1, bias_initializer=keras.initializers.Constant(-2.0), name="repeat_gate")

    def call(self, combined, states, valid, mask=None):
        queries = self.query_projection(combined)
        keys = self.key_projection(states)
        scale = ops.sqrt(ops.cast(self.units, "float32"))
        logits = ops.cast(ops.matmul(queries, ops.transpose(keys, (0, 2, 1))), "float32") / scale
        weights = masked_softmax(logits, causal_validity(valid))
        gate = ops.sigmoid(ops.cast(self.gate(combined), "float32"))[..., 0]
        return gate, weights

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ItemTransitions(layers.Layer):
    """The item-to-item component: where the user's last items usually lead, mixed into the next-item distribution
    by a learned gate (what makes item-to-item co-occurrence strong on small data, inside the model).

    A fixed table (not trained; `set_table` from model_lib/data/cooccurrence.py on the training histories) gives each
    item its N most co-occurring items: `neighbour_items` (V, N) int32 and their cosine similarities
    `neighbour_weights` (V, N). With x_t the item at step t and a = softmax(offset_logits) over the last `recent`
    steps (learned; starts at item-kNN's 1, 1/2, 1/3 ... recency weights),
        P_transition(v | t) = sum_o a_o S[x_{t-o}, v] / sum_o a_o sum_u S[x_{t-o}, u]      o = 0 .. recent - 1
    (zero where none of those steps has a neighbour) and the gate g_t = sigmoid(w . combined_t + b) says how much
    of the next-item probability it gets: P(v) = g P_transition(v) + (1 - g) softmax(logits)(v).

    `call(combined, items)`: combined (B, T, H), items (B, T) -> gate (B, T) float32 in (0, 1).
    `target_probability(items, targets)`: (B, T) each -> P_transition(target_t | t) (B, T) float32.
    """

    def __init__(self, num_items: int, neighbours: int, recent: int, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.neighbours, self.recent = num_items, neighbours, recent
        self.supports_masking = True
        self.neighbour_items = self.add_weight(
            shape=(num_items, neighbours), initializer="zeros", dtype="int32", trainable=False, name="neighbour_items"
        )
        self.neighbour_weights = self.add_weight(
            shape=(num_items, neighbours),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            name="neighbour_weights",
        )
        recency = np.log(1.0 / np.arange(1, recent + 1)).astype(np.float32)
        self.offset_logits = self.add_weight(
            shape=(recent,), initializer=keras.initializers.Constant(recency), name="offset_logits"
        )
        # Starts at g = 0.5: the table predicts well from the first update, the network takes over as it learns.
        self.gate = layers.Dense(1, name="transition_gate")

    def set_table(self, indices: np.ndarray, weights: np.ndarray) -> None:
        self.neighbour_items.assign(np.asarray(indices, np.int32))
        self.neighbour_weights.assign(np.asarray(weights, np.float32))

    def recent_items(self, items):
        """(B, T) -> (B, T, recent): at step t the items at t, t-1, ... (padding before the window's start)."""
        items = ops.cast(items, "int32")
        steps = ops.shape(items)[1]
        # Pad, then cut to the width: a batch trimmed to fewer steps than `recent` still gets `recent` columns.
        shifted = [items] + [ops.pad(items, [[0, 0], [offset, 0]])[:, :steps] for offset in range(1, self.recent)]
        return ops.stack(shifted, axis=-1)

    def target_probability(self, items, targets):
        recent = self.recent_items(items)
        offsets = ops.softmax(ops.cast(self.offset_logits, "float32"))
        hits = ops.equal(ops.take(self.neighbour_items, recent, axis=0), ops.cast(targets, "int32")[:, :, None, None])
        weights = ops.take(self.neighbour_weights, recent, axis=0)  # (B, T, recent, N)
        numerator = ops.sum(ops.sum(weights * ops.cast(hits, "float32"), axis=-1) * offsets, axis=-1)
        denominator = ops.sum(ops.sum(weights, axis=-1) * offsets, axis=-1)
        return ops.where(denominator > 0, numerator / ops.maximum(denominator, 1e-12), 0.0)

    def call(self, combined, items, mask=None):
        return ops.sigmoid(ops.cast(self.gate(combined), "float32"))[..., 0]

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {
            **super().get_config(),
            "num_items": self.num_items,
            "neighbours": self.neighbours,
            "recent": self.recent,
        }
