"""The training losses (TensorFlow, imported inside the functions): full and sampled softmax cross-entropy, the
repeat/explore mixture, and the masked mean over the positions that have a target. Definitions in
model_lib/model/training.py's docstring."""

from __future__ import annotations

import numpy as np

from model_lib.contracts import FIRST_ITEM_INDEX, PAD_INDEX

SAMPLING_DISTORTION = 0.75  # word2vec's unigram^0.75: popular items drawn often, but not overwhelmingly


def masked_mean(values, weights):
    import tensorflow as tf

    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def sampling_log_q(train_items: np.ndarray, num_items: int) -> np.ndarray:
    """(V,) log Q of the negative sampler: training counts ^ 0.75, normalised; padding and unknown never drawn."""
    counts = np.bincount(train_items.ravel(), minlength=num_items).astype(np.float64)
    counts[:FIRST_ITEM_INDEX] = 0
    weights = np.power(counts, SAMPLING_DISTORTION)
    weights[FIRST_ITEM_INDEX:] += 1e-3  # every catalogue item, even one unseen in training, can be drawn
    probabilities = weights / weights.sum()
    return np.log(np.maximum(probabilities, 1e-30)).astype(np.float32)


def sampled_softmax_loss(user_vectors, targets, item_table, item_bias, log_q, num_sampled: int, seed):
    """(N, D) user vectors, (N,) targets -> (N,) cross-entropy over [target, num_sampled shared negatives].

    Negatives are drawn with replacement from Q (log_q (V,)); each logit is corrected by - log(num_sampled * Q).
    Stateless sampling from `seed` (2,) int, so a resumed run draws the same negatives.
    """
    import tensorflow as tf

    negatives = tf.random.stateless_categorical(log_q[None, :], num_sampled, seed=seed, dtype=tf.int32)[0]
    correction = tf.math.log(float(num_sampled))
    negative_logits = (
        tf.matmul(user_vectors, tf.gather(item_table, negatives), transpose_b=True)
        + tf.gather(item_bias, negatives)
        - (correction + tf.gather(log_q, negatives))
    )
    negative_logits = tf.where(negatives[None, :] == targets[:, None], -1e9, negative_logits)
    target_logits = (
        tf.reduce_sum(user_vectors * tf.gather(item_table, targets), axis=-1)
        + tf.gather(item_bias, targets)
        - (correction + tf.gather(log_q, targets))
    )
    logits = tf.concat([target_logits[:, None], negative_logits], axis=1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.zeros_like(targets), logits=logits)


def log_mixture(gate, probability, log_other):
    """log(g * probability + (1 - g) * exp(log_other)), elementwise (B, T), in log space (no underflow)."""
    import tensorflow as tf

    gate = tf.clip_by_value(gate, 1e-6, 1.0 - 1e-6)
    first = tf.math.log(gate) + tf.math.log(tf.maximum(probability, 1e-12))
    return tf.reduce_logsumexp(tf.stack([first, tf.math.log(1.0 - gate) + log_other], axis=-1), axis=-1)


def repeat_mixture_log_likelihood(log_explore, gate, repeat_weights, items, targets):
    """log(g * repeat(target) + (1 - g) * exp(log_explore)) per position (B, T).

    log_explore (B, T): log P_explore(target); gate (B, T); repeat_weights (B, T, T) over the input positions;
    items (B, T) the inputs; targets (B, T) the next items. repeat(target) sums the weights of the positions
    holding the target.
    """
    import tensorflow as tf

    hits = tf.cast(tf.equal(items[:, None, :], targets[:, :, None]), tf.float32)
    return log_mixture(gate, tf.reduce_sum(repeat_weights * hits, axis=-1), log_explore)


def transition_mixture_log_likelihood(log_network, gate, transition_probability):
    """log(h * P_transition(target) + (1 - h) * exp(log_network)) per position (B, T): log_network (B, T) the
    network's log softmax of the target, gate h (B, T), transition_probability (B, T) (layers.ItemTransitions)."""
    return log_mixture(gate, transition_probability, log_network)


def full_softmax_loss(logits, targets):
    import tensorflow as tf

    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def next_item_loss(model, inputs, item_targets, type_targets, model_settings, log_q, sample_seed):
    """The training loss of one batch (scalar float32): the next-item loss (full or sampled softmax, mixed with the
    item-to-item transitions when the model has them, then under the repeat mixture when it has the repeat
    mechanism) averaged over the positions whose target is a known item (with the transitions, plus the network's
    own loss: see below), plus event_type_loss_weight x the next-event-type loss when the model has that head.

    inputs: {"items", "event_types", "gaps"} (B, T); item_targets, type_targets (B, T) int; log_q (V,) or None
    (full softmax); sample_seed (2,) int for the stateless negative sampler.
    """
    import tensorflow as tf

    outputs = model.forward(inputs, training=True)
    weights = tf.cast(item_targets >= FIRST_ITEM_INDEX, tf.float32)
    if log_q is not None:
        vectors = tf.cast(outputs["user_vectors"], tf.float32)
        losses = sampled_softmax_loss(
            tf.reshape(vectors, (-1, vectors.shape[-1])),
            tf.reshape(item_targets, (-1,)),
            tf.cast(model.item_embedding.embeddings, tf.float32),
            model.item_bias,
            log_q,
            model_settings.sampled_negatives,
            sample_seed,
        )
        losses = tf.reshape(losses, tf.shape(item_targets))
    else:
        losses = full_softmax_loss(model.item_logits(outputs["user_vectors"]), item_targets)
    without_transitions = losses
    if outputs["transition_gate"] is not None:
        losses = -transition_mixture_log_likelihood(
            -losses,
            outputs["transition_gate"],
            model.transitions.target_probability(inputs["items"], item_targets),
        )
    if outputs["repeat_gate"] is not None:

        def with_repeats(explore_losses):
            return -repeat_mixture_log_likelihood(
                -explore_losses, outputs["repeat_gate"], outputs["repeat_weights"], inputs["items"], item_targets
            )

        losses, without_transitions = with_repeats(losses), with_repeats(without_transitions)
    loss = masked_mean(losses, weights)
    if outputs["transition_gate"] is not None:
        # Inside the mixture the network learns only from the targets the transitions miss (its gradient is scaled by
        # its share of the mixture), which left it at item-kNN's level for thousands of updates on ML-1M: it also
        # learns as the model without transitions would (the repeat mixture included, so repeats stay the repeat
        # mechanism's), and the gate learns how far to trust each. The two are averaged, so the next-event-type loss
        # keeps its weight against the item loss.
        loss = 0.5 * (loss + masked_mean(without_transitions, weights))
    if outputs["kl"] is not None:
        loss += model_settings.kl_weight * masked_mean(outputs["kl"], weights)
    if outputs["event_type_logits"] is not None:
        type_losses = full_softmax_loss(tf.cast(outputs["event_type_logits"], tf.float32), type_targets)
        loss += model_settings.event_type_loss_weight * masked_mean(
            type_losses, tf.cast(type_targets > PAD_INDEX, tf.float32)
        )
    return loss
