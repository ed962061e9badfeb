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

from model_lib.config.checks import ENCODERS
from model_lib.contracts import PAD_INDEX, model_inputs
from model_lib.model.layers import (
    NEXTITNET_DILATIONS,
    PACKAGE,
    SHIPPED,
    CausalAttention,
    CausalSelfAttentionBlock,
    DilatedCausalBlock,
    ItemTransitions,
    RepeatExplore,
    VariationalBottleneck,
)


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
    Scores of the next item from those: model_lib.serving.scoring.ModelScorer (the one scoring path).
    """

    def __init__(
        self,
        num_items: int,
        num_event_types: int,
        num_gap_buckets: int,
        embedding_dim: int = SHIPPED.embedding_dim,
        hidden_dim: int = SHIPPED.hidden_dim,
        lstm_layers: int = SHIPPED.lstm_layers,
        dropout: float = SHIPPED.dropout,
        event_type_head: bool = False,
        repeat_mechanism: bool = False,
        attention_blocks: int = 0,
        attention_heads: int = SHIPPED.attention_heads,
        transition_neighbours: int = 0,  # a table is built from the training data (steps.py); none by default
        transition_recent: int = SHIPPED.transition_recent,
        encoder: str = SHIPPED.encoder,
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
        self._build_encoder(dropout)
        self._build_attention(dropout)
        self._build_heads()

    def _build_encoder(self, dropout: float) -> None:
        """The embeddings and what reads them (LSTM layers or NextItNet's dilated convolutions; the SVAE bottleneck)."""
        hidden_dim = self.hidden_dim
        self.item_embedding = layers.Embedding(
            self.num_items,
            self.embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=self.embedding_dim**-0.5),
            name="item_embedding",
        )
        self.type_embedding = layers.Embedding(self.num_event_types, self.embedding_dim, name="event_type_embedding")
        self.gap_embedding = layers.Embedding(self.num_gap_buckets, self.embedding_dim, name="gap_embedding")
        self.input_dropout = layers.Dropout(dropout)
        if self.encoder == "nextitnet":
            self.lstms = []
            self.encoder_input = layers.Dense(hidden_dim, name="encoder_input")
            self.convolutions = [
                DilatedCausalBlock(hidden_dim, dilation, name=f"dilated_block_{i}")
                for i, dilation in enumerate(NEXTITNET_DILATIONS)
            ]
        else:
            self.lstms = [
                layers.LSTM(hidden_dim, return_sequences=True, name=f"lstm_{i}") for i in range(self.lstm_layers)
            ]
        self.bottleneck = (
            VariationalBottleneck(hidden_dim, name="variational_bottleneck") if self.encoder == "svae" else None
        )

    def _build_attention(self, dropout: float) -> None:
        """NARM-style attention (attention_blocks 0) or that many transformer blocks over the encoder's states."""
        if self.attention_blocks:
            self.blocks = [
                CausalSelfAttentionBlock(self.hidden_dim, self.attention_heads, dropout, name=f"attention_block_{i}")
                for i in range(self.attention_blocks)
            ]
            self.final_norm = layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        else:
            self.attention = CausalAttention(self.hidden_dim, name="causal_attention")
            self.combine = layers.Dense(self.hidden_dim, activation="tanh", name="combine")
        self.output_dropout = layers.Dropout(dropout)

    def _build_heads(self) -> None:
        """The user vector's projection and the item bias; the event-type head, the repeat mechanism and the
        transitions when the model has them."""
        # Linear, so user vectors are not bounded: tied item embeddings need logit ranges far beyond tanh's.
        self.projection = layers.Dense(self.embedding_dim, name="projection")
        self.item_bias = self.add_weight(shape=(self.num_items,), initializer="zeros", name="item_bias")
        self.next_event_type = (
            layers.Dense(self.num_event_types, dtype="float32", name="next_event_type")
            if self.event_type_head
            else None
        )
        self.repeat_explore = RepeatExplore(self.hidden_dim, name="repeat_explore") if self.repeat_mechanism else None
        self.transitions = (
            ItemTransitions(self.num_items, self.transition_neighbours, self.transition_recent, name="item_transitions")
            if self.transition_neighbours
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
    model(model_inputs(dummy, dummy, dummy))
