"""The LSTM + causal attention next-item model (Keras 3).

    items, event types, gap buckets (B, T)  -- left-padded with 0
      -> item embedding + event-type embedding + gap embedding (B, T, D) -> dropout
      -> LSTM, return sequences (B, T, H), padded steps masked
      -> attention over the real events up to t, one of two kinds (`attention_blocks`):
         0: NARM-style, query h_t, keys/values h_1..h_t (B, T, H), combined tanh(W [h_t ; context_t]) (B, T, H);
         n > 0: n pre-norm transformer blocks over the LSTM states (multi-head causal self-attention and a
         position-wise feed-forward layer, each with dropout and a residual) and a final layer norm (B, T, H)
      -> linear projection (B, T, D)
      -> logits = projection . item_embedding^T + item_bias (B, T, V)   (tied item embeddings)
      -> optional auxiliary head: next event type logits from the combined state (B, T, event types)
      -> optional item-to-item transitions (`transition_neighbours`): a gate h (B, T) mixes in where the last items
         usually lead, from a co-occurrence table of the training data (ItemTransitions):
         P_explore(v) = h * P_transition(v) + (1 - h) * softmax(logits)(v)
      -> optional repeat/explore mechanism (RepeatNet-style, `repeat_mechanism`): a gate g (B, T) in (0, 1) from the
         combined state and a repeat attention (B, T, T) over the real history steps up to t; the next-item
         probability is  P(v) = g * sum_j repeat[t, j] [item_j = v]  +  (1 - g) * P_explore(v),
         so the model learns when people re-buy (a history item) and when they explore (the catalogue)

Trained to predict the next item at every position (model_lib/model/training.py holds the losses). At inference only
the last position is scored and its attention row says which history item drove the recommendation.
Under a mixed-precision policy the layers compute in float16 while attention softmax and item logits stay float32.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from model_lib.config.groups import ENCODERS
from model_lib.contracts import PAD_INDEX

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

    def __init__(self, units: int, heads: int = 2, dropout: float = 0.2, **kwargs):
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


@keras.saving.register_keras_serializable(package=PACKAGE)
class NextItemModel(keras.Model):
    """LSTM + attention next-item scorer over a catalogue of `num_items` indices (0 = padding, 1 = unknown); the
    LSTM may be replaced by NextItNet's dilated convolutions, or followed by a variational bottleneck (`encoder`).

    `call(inputs)` with inputs {"items", "event_types", "gaps"} each (B, T) int -> logits (B, T, num_items).
    `forward(inputs)` -> {"user_vectors": (B, T, D), "attention": (B, T, T),
                          "event_type_logits": (B, T, num_event_types) when `event_type_head`, else None,
                          "repeat_gate": (B, T) and "repeat_weights": (B, T, T) when `repeat_mechanism`, else None,
                          "transition_gate": (B, T) when `transition_neighbours` > 0, else None,
                          "kl": (B, T) the latent's KL divergence when `encoder` is "svae", else None}.
    `encode(inputs)` -> (user vectors (B, T, D), attention weights (B, T, T)).
    `encode_last(inputs)` -> the last step's (user vector (B, D), attention row (B, T), repeat gate (B,),
                             repeat row (B, T), next event type probabilities (B, num_event_types), transition
                             gate (B,)); gate and repeat row are zeros without the repeat mechanism, the
                             probabilities without the head, the transition gate without the transitions.
    Scores of the next item from those: model_lib.serving.recommender.ModelScorer (the one scoring path).
    """

    def __init__(
        self,
        num_items: int,
        num_event_types: int,
        num_gap_buckets: int,
        embedding_dim: int = 64,
        hidden_dim: int = 64,
        lstm_layers: int = 1,
        dropout: float = 0.2,
        event_type_head: bool = False,
        repeat_mechanism: bool = False,
        attention_blocks: int = 0,
        attention_heads: int = 2,
        transition_neighbours: int = 0,
        transition_recent: int = 5,
        encoder: str = "lstm",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        self.encoder = encoder
        self.num_items = num_items
        self.num_event_types = num_event_types
        self.num_gap_buckets = num_gap_buckets
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.lstm_layers = lstm_layers
        self.dropout_rate = dropout
        self.event_type_head = event_type_head
        self.repeat_mechanism = repeat_mechanism
        self.attention_blocks = attention_blocks
        self.attention_heads = attention_heads
        self.transition_neighbours = transition_neighbours
        self.transition_recent = transition_recent
        self.item_embedding = layers.Embedding(
            num_items,
            embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=embedding_dim**-0.5),
            name="item_embedding",
        )
        self.type_embedding = layers.Embedding(num_event_types, embedding_dim, name="event_type_embedding")
        self.gap_embedding = layers.Embedding(num_gap_buckets, embedding_dim, name="gap_embedding")
        self.input_dropout = layers.Dropout(dropout)
        if encoder == "nextitnet":
            self.lstms = []
            self.encoder_input = layers.Dense(hidden_dim, name="encoder_input")
            self.convolutions = [
                DilatedCausalBlock(hidden_dim, dilation, name=f"dilated_block_{i}")
                for i, dilation in enumerate(NEXTITNET_DILATIONS)
            ]
        else:
            self.lstms = [layers.LSTM(hidden_dim, return_sequences=True, name=f"lstm_{i}") for i in range(lstm_layers)]
        self.bottleneck = (
            VariationalBottleneck(hidden_dim, name="variational_bottleneck") if encoder == "svae" else None
        )
        if attention_blocks:
            self.blocks = [
                CausalSelfAttentionBlock(hidden_dim, attention_heads, dropout, name=f"attention_block_{i}")
                for i in range(attention_blocks)
            ]
            self.final_norm = layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        else:
            self.attention = CausalAttention(hidden_dim, name="causal_attention")
            self.combine = layers.Dense(hidden_dim, activation="tanh", name="combine")
        self.output_dropout = layers.Dropout(dropout)
        # Linear, so user vectors are not bounded: tied item embeddings need logit ranges far beyond tanh's.
        self.projection = layers.Dense(embedding_dim, name="projection")
        self.item_bias = self.add_weight(shape=(num_items,), initializer="zeros", name="item_bias")
        self.next_event_type = (
            layers.Dense(num_event_types, dtype="float32", name="next_event_type") if event_type_head else None
        )
        self.repeat_explore = RepeatExplore(hidden_dim, name="repeat_explore") if repeat_mechanism else None
        self.transitions = (
            ItemTransitions(num_items, transition_neighbours, transition_recent, name="item_transitions")
            if transition_neighbours
            else None
        )

    def forward(self, inputs, training=False) -> dict:
        items = ops.cast(inputs["items"], "int32")
        valid = ops.not_equal(items, 0)
        embedded = (
            self.item_embedding(items)
            + self.type_embedding(ops.cast(inputs["event_types"], "int32"))
            + self.gap_embedding(ops.cast(inputs["gaps"], "int32"))
        )
        # Padded steps contribute nothing: zero their input and let the LSTM carry state across them.
        embedded = embedded * ops.cast(valid, embedded.dtype)[..., None]
        states = self.input_dropout(embedded, training=training)
        if self.encoder == "nextitnet":
            states = self.encoder_input(states) * ops.cast(valid, embedded.dtype)[..., None]
            for block in self.convolutions:
                states = block(states, valid)
        for lstm in self.lstms:
            states = lstm(states, mask=valid, training=training)
        combined, weights = self.attend(states, valid, training)
        kl = None
        if self.bottleneck is not None:
            combined, kl = self.bottleneck(combined, training=training)
        gate, repeat_weights = (
            self.repeat_explore(combined, states, valid) if self.repeat_explore is not None else (None, None)
        )
        return {
            "user_vectors": self.projection(combined),
            "attention": weights,
            "event_type_logits": self.next_event_type(combined) if self.next_event_type is not None else None,
            "repeat_gate": gate,
            "repeat_weights": repeat_weights,
            "transition_gate": self.transitions(combined, items) if self.transitions is not None else None,
            "kl": kl,
        }

    def attend(self, states, valid, training):
        """LSTM states (B, T, H) -> (combined per-step state (B, T, H), attention weights (B, T, T))."""
        if not self.attention_blocks:
            context, weights = self.attention(states, valid)
            combined = self.combine(ops.concatenate([states, context], axis=-1))
            return self.output_dropout(combined, training=training), weights
        for block in self.blocks:
            states, weights = block(states, valid, training=training)
        return self.final_norm(states), weights

    def encode(self, inputs, training=False):
        outputs = self.forward(inputs, training=training)
        return outputs["user_vectors"], outputs["attention"]

    def item_logits(self, user_vectors):
        """(..., D) -> (..., num_items) float32: dot product with the tied item table plus a per-item bias."""
        vectors = ops.cast(user_vectors, "float32")
        return ops.matmul(vectors, ops.transpose(ops.cast(self.item_embedding.embeddings, "float32"))) + self.item_bias

    def call(self, inputs, training=False):
        user_vectors, _ = self.encode(inputs, training=training)
        return self.item_logits(user_vectors)

    def encode_last(self, inputs):
        """-> (user vector after the last event (B, D), that step's attention row (B, T), repeat gate (B,), repeat
        row (B, T), next event type probabilities (B, num_event_types), transition gate (B,)); batch scoring
        multiplies the vectors with the item table outside the model. Without the repeat mechanism the gate and row
        are zeros; without the event-type head the probabilities are zeros; without the transitions their gate is
        zero. Index 0 of the event types is padding: probability 0."""
        return self._last_step(self.forward(inputs, training=False))

    def encode_steps(self, inputs):
        """-> (user vectors after every step (B, T, D), repeat gate (B, T), repeat rows (B, T, T), transition gate
        (B, T)); the gates and rows are zeros without their mechanism. Anomaly scores read the model's prediction
        before each event."""
        return self._every_step(self.forward(inputs, training=False))

    def encode_last_and_steps(self, inputs):
        """-> encode_last's six outputs, then encode_steps' four, from one forward pass (the nightly scoring of a
        user with events that day needs both)."""
        outputs = self.forward(inputs, training=False)
        return (*self._last_step(outputs), *self._every_step(outputs))

    def _last_step(self, outputs):
        attention = outputs["attention"][:, -1, :]
        vectors = outputs["user_vectors"][:, -1, :]
        transition_gate = (
            ops.zeros_like(attention[:, 0]) if outputs["transition_gate"] is None else outputs["transition_gate"][:, -1]
        )
        if outputs["event_type_logits"] is None:
            next_types = ops.zeros((ops.shape(vectors)[0], self.num_event_types), "float32")
        else:
            logits = ops.cast(outputs["event_type_logits"][:, -1, :], "float32")
            padding = ops.one_hot(ops.zeros_like(logits[:, 0], "int32"), self.num_event_types) > 0
            next_types = ops.softmax(ops.where(padding, -1e9, logits), axis=-1)
        if outputs["repeat_gate"] is None:
            gate, repeat = ops.zeros_like(attention[:, 0]), ops.zeros_like(attention)
        else:
            gate, repeat = outputs["repeat_gate"][:, -1], outputs["repeat_weights"][:, -1, :]
        return vectors, attention, gate, repeat, next_types, transition_gate

    def _every_step(self, outputs):
        zeros = ops.zeros_like(outputs["attention"])
        transition_gate = zeros[:, :, 0] if outputs["transition_gate"] is None else outputs["transition_gate"]
        if outputs["repeat_gate"] is None:
            return outputs["user_vectors"], zeros[:, :, 0], zeros, transition_gate
        return outputs["user_vectors"], outputs["repeat_gate"], outputs["repeat_weights"], transition_gate

    def get_config(self):
        return {
            **super().get_config(),
            "num_items": self.num_items,
            "num_event_types": self.num_event_types,
            "num_gap_buckets": self.num_gap_buckets,
            "embedding_dim": self.embedding_dim,
            "hidden_dim": self.hidden_dim,
            "lstm_layers": self.lstm_layers,
            "dropout": self.dropout_rate,
            "event_type_head": self.event_type_head,
            "repeat_mechanism": self.repeat_mechanism,
            "attention_blocks": self.attention_blocks,
            "attention_heads": self.attention_heads,
            "transition_neighbours": self.transition_neighbours,
            "transition_recent": self.transition_recent,
            "encoder": self.encoder,
        }


def constructor_arguments(model: NextItemModel) -> dict:
    """The arguments that rebuild the model (what model_config.json stores): its config without Keras' own keys."""
    return {key: value for key, value in model.get_config().items() if key not in ("name", "trainable", "dtype")}


def build_model(model) -> None:
    """Creates the weights by one call on a dummy batch (a subclassed model builds lazily)."""
    dummy = np.full((1, 2), PAD_INDEX, dtype=np.int32)
    model({"items": dummy, "event_types": dummy, "gaps": dummy})


def model_inputs(items, event_types, gaps) -> dict:
    """The input dict the model takes: three aligned (B, T) integer arrays."""
    return {"items": items, "event_types": event_types, "gaps": gaps}
