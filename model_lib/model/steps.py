"""The pieces one optimizer update is made of: the model as the settings describe it, its optimizer, the
distributed train step (loss and gradients XLA-compiled), an epoch's distributed dataset and a round of updates."""

from __future__ import annotations

import numpy as np

from model_lib.config import ModelSettings, Settings
from model_lib.model.examples import TrainingRows, epoch_batches
from model_lib.model.losses import next_item_loss
from model_lib.model.schedule import learning_rate_schedule


def build_next_item_model(num_items: int, settings: Settings, event_type_head: bool = False):
    """The configured network over `num_items` indices, built; with the next-event-type head when asked
    (training asks for it when the data has several event types: training.trains_event_types)."""
    from model_lib.model.network import NextItemModel, build_model

    model = NextItemModel(
        num_items=num_items,
        num_event_types=settings.sessionize.num_event_types,
        num_gap_buckets=settings.sessionize.num_gap_buckets,
        embedding_dim=settings.model.embedding_dim,
        hidden_dim=settings.model.hidden_dim,
        lstm_layers=settings.model.lstm_layers,
        dropout=settings.model.dropout,
        event_type_head=event_type_head,
        repeat_mechanism=settings.repeat_rule().allows_repeats,
        attention_blocks=settings.model.attention_blocks,
        attention_heads=settings.model.attention_heads,
        transition_neighbours=settings.model.transition_neighbours,
        transition_recent=settings.model.transition_recent,
        encoder=settings.model.encoder,
    )
    build_model(model)
    return model


def build_optimizer_and_model(
    strategy, num_items: int, settings: Settings, total_updates: int, mixed: bool, event_type_head: bool
):
    """The model, its Adam optimizer (loss-scaled under mixed precision), its learning rate schedule and the round
    counter, on the strategy."""
    import keras
    import tensorflow as tf

    with strategy.scope():
        model = build_next_item_model(num_items, settings, event_type_head)
        schedule = learning_rate_schedule(settings.training, total_updates)
        optimizer = keras.optimizers.Adam(schedule)
        if mixed:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        epoch_counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    return model, optimizer, schedule, epoch_counter


def make_train_step(model, optimizer, strategy, model_settings: ModelSettings, log_q, mixed: bool):
    """-> step(inputs, item_targets, type_targets, sample_seed): one optimizer update on every replica (the inner
    loss and gradient XLA-compiled when model_settings.xla), returning the loss averaged over the replicas."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    @tf.function(jit_compile=model_settings.xla, reduce_retracing=True)
    def loss_and_gradients(inputs, item_targets, type_targets, sample_seed):
        with tf.GradientTape() as tape:
            loss = next_item_loss(model, inputs, item_targets, type_targets, model_settings, log_q, sample_seed)
            # The optimizer sums gradients over replicas, so each replica contributes its share of the mean.
            scaled = loss / replicas
            if mixed:
                scaled = optimizer.scale_loss(scaled)
        return loss, tape.gradient(scaled, model.trainable_variables)

    def replica_step(inputs, item_targets, type_targets, sample_seed):
        loss, gradients = loss_and_gradients(inputs, item_targets, type_targets, sample_seed)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function(reduce_retracing=True)
    def distributed_step(inputs, item_targets, type_targets, sample_seed):
        losses = strategy.run(replica_step, args=(inputs, item_targets, type_targets, sample_seed))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    return distributed_step


def make_epoch_dataset(strategy, rows: TrainingRows, batch_size: int, batches: int, seed: int):
    """-> epoch -> the distributed dataset of that epoch's `batches` batches (see epoch_batches)."""
    import tensorflow as tf

    signature = (
        {name: tf.TensorSpec((None, None), tf.int32) for name in rows.inputs},
        tf.TensorSpec((None, None), tf.int32),
        tf.TensorSpec((None, None), tf.int32),
    )

    def epoch_dataset(epoch: int):
        def make(context):
            return tf.data.Dataset.from_generator(
                lambda: epoch_batches(rows, batch_size, batches, seed, epoch),
                output_signature=signature,
            ).prefetch(2)

        return strategy.distribute_datasets_from_function(make)

    return epoch_dataset


def train_round(distributed_step, dataset, seed: int, epoch: int, progress) -> list[float]:
    """The updates of one validation round; each step's sampling seed is a function of (seed, epoch, step), so a
    resumed run draws what an uninterrupted one would."""
    import tensorflow as tf

    losses = []
    for step, batch in enumerate(dataset, start=1):
        losses.append(float(distributed_step(*batch, tf.constant([seed, epoch * 1_000_003 + step], tf.int32))))
        progress.update(step, [("loss", float(np.mean(losses)))])
    return losses
