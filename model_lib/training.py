"""Training the next-item model: masked full-softmax cross-entropy at every position, a seeded custom loop
with Keras progress bars, validation NDCG@K after every epoch and early stopping that keeps the best weights."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from model_lib.config import Settings
from model_lib.metrics import evaluate_holdout
from model_lib.schemas import FIRST_ITEM_INDEX
from model_lib.splits import HoldOut, Split, next_item_pairs


@dataclass
class TrainingResult:
    model: object
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    sequences_per_second: float = 0.0


def evaluate_model(model, holdout: HoldOut, num_items: int, k_values=(10, 20)) -> dict[str, float]:
    """The model's metrics on a hold-out with the shared metrics module (full ranking, seen excluded)."""

    def score(batch):
        logits, _ = model.score_last({name: np.asarray(v, np.int32) for name, v in batch.items()})
        return np.asarray(logits)

    inputs = holdout.inputs.model_inputs()
    return evaluate_holdout(score, inputs, holdout.inputs.older_items, holdout.targets, num_items, k_values)


def train_next_item_model(
    split: Split,
    num_items: int,
    settings: Settings,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    verbose: int = 1,
) -> TrainingResult:
    import keras
    import tensorflow as tf

    from model_lib.model import NextItemModel
    from model_lib.scoring import build_model

    keras.utils.set_random_seed(settings.seed)
    model = NextItemModel(
        num_items=num_items,
        num_event_types=settings.num_event_types,
        num_gap_buckets=settings.num_gap_buckets,
        embedding_dim=settings.embedding_dim,
        hidden_dim=settings.hidden_dim,
        lstm_layers=settings.lstm_layers,
        dropout=settings.dropout,
    )
    build_model(model)
    optimizer = keras.optimizers.Adam(settings.learning_rate)

    inputs, targets = next_item_pairs(split.train)
    trainable = (targets >= FIRST_ITEM_INDEX).any(axis=1)
    inputs = {name: values[trainable].astype(np.int32) for name, values in inputs.items()}
    targets = targets[trainable].astype(np.int32)
    dataset = (
        tf.data.Dataset.from_tensor_slices((inputs, targets))
        .shuffle(len(targets), seed=settings.seed, reshuffle_each_iteration=True)
        .batch(settings.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    steps_per_epoch = int(np.ceil(len(targets) / settings.batch_size))

    @tf.function(reduce_retracing=True, jit_compile=settings.xla)
    def train_step(batch_inputs, batch_targets):
        with tf.GradientTape() as tape:
            logits = model(batch_inputs, training=True)
            # Padding and unknown-item targets carry no signal; the loss is the mean over real targets.
            weights = tf.cast(batch_targets >= FIRST_ITEM_INDEX, tf.float32)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch_targets, logits=logits)
            loss = tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    result = TrainingResult(model=model)
    best_score, best_weights, waited = -1.0, None, 0
    started = time.perf_counter()
    k = settings.eval_k
    for epoch in range(1, settings.epochs + 1):
        if verbose:
            print(f"Epoch {epoch}/{settings.epochs}", flush=True)
        progress = keras.utils.Progbar(steps_per_epoch, verbose=verbose, stateful_metrics=["loss"])
        losses = []
        for step, (batch_inputs, batch_targets) in enumerate(dataset, start=1):
            loss = float(train_step(batch_inputs, batch_targets))
            losses.append(loss)
            progress.update(step, [("loss", float(np.mean(losses)))])
        validation = evaluate_model(model, split.validation, num_items, (k,))
        record = {"epoch": epoch, "loss": float(np.mean(losses)), **{f"val_{m}": v for m, v in validation.items()}}
        result.history.append(record)
        print(
            f"[reco] epoch {epoch}: loss={record['loss']:.4f} val HR@{k}={validation[f'hr_{k}']:.4f} "
            f"val NDCG@{k}={validation[f'ndcg_{k}']:.4f} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
        if on_epoch_end:
            on_epoch_end(epoch, record)
        if validation[f"ndcg_{k}"] > best_score:
            best_score, best_weights, waited, result.best_epoch = validation[f"ndcg_{k}"], model.get_weights(), 0, epoch
        else:
            waited += 1
            if waited >= settings.patience:
                print(f"[reco] early stop: no validation NDCG@{k} gain for {waited} epochs", flush=True)
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    result.seconds = time.perf_counter() - started
    result.sequences_per_second = len(targets) * len(result.history) / max(result.seconds, 1e-9)
    return result
