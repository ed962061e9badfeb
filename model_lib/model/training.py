"""Training the next-item model: a custom loop over tf.distribute, checkpoints, early stopping, two losses.

Strategy (`distribution_strategy`): MultiWorkerMirroredStrategy when TF_CONFIG names a cluster of several tasks,
MirroredStrategy over the local GPUs when there are several, otherwise the default one-device strategy. On GPUs
the layers compute in mixed float16 (with loss scaling). The loop is our own because Keras 3 `fit` fails under
MultiWorkerMirroredStrategy; `settings.training.batch_size` is per replica.

Input: the sequence Parquet files are dealt out to the workers (file i to input pipeline i mod n); each worker
reads only its files, applies the accuracy protocol (`splits.protocol_split`) and trains on the training part.
Every worker evaluates the whole validation hold-out, so all take the same early-stopping decision. Every worker
runs the same number of steps per epoch (from the Parquet row counts of all shards); a step's batch holds rows of
similar length, trimmed to a multiple of `bucket_width` columns, so little time goes into padding.

Examples: every window of `seq_len` events of a user's stored history (`history_len`), the newest first and
`window_stride` apart, so a user with 2,000 events teaches more than one window.

Budget (model/schedule.py): `epochs` passes over the training windows, at most `max_updates` optimizer updates,
validated every `eval_every_updates` (or once per pass), within `train_minutes`; the learning rate warms up
linearly over `warmup_share` of the plan, then decays along a cosine to `min_lr_ratio` of itself at its end.
Early stopping: after `patience` validations whose NDCG@K did not exceed the last reference by `early_stop_stderr`
standard errors (a small validation set is noisy); the weights of the best validation are kept (a tie: the later
one). The validation pass is the XLA-compiled scoring path (scoring.ModelScorer).

Loss, averaged over the positions t whose target (the item at t + 1) is a known item:
    full     cross-entropy of the softmax over the whole catalogue
    sampled  cross-entropy over [target, S negatives drawn from Q = unigram^0.75], every logit corrected by
             - log(S * Q(item)) (the log-Q correction; without it popular items are over-penalised); a negative
             equal to the target is masked out
  with the item-to-item transitions (transition_neighbours > 0): P_explore(target) = h * P_transition(target) +
             (1 - h) * P_network(target), P_network from the full or sampled softmax above, the table built from the
             training part of all the files (every worker the same; no held-out event in it)
  with the repeat mechanism (on when the repeat policy lets seen items be recommended): - log of the mixture
             g * repeat(target) + (1 - g) * P_explore(target)
  + event_type_loss_weight * cross-entropy of the next event type (the optional auxiliary head)

Checkpoints: after every epoch the chief saves model, optimizer and loop state (epoch, early-stopping counters,
history) under `checkpoint_dir`; the best epoch's weights are kept in a second checkpoint. A run given the same
folder resumes after the last saved epoch, so a killed task's retry continues instead of starting over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_lib.config import ModelSettings, Settings, TrainingSettings
from model_lib.config.groups import HYPER_PARAMETERS
from model_lib.contracts import FIRST_ITEM_INDEX, PAD_INDEX
from model_lib.data.cooccurrence import NeighbourTable
from model_lib.data.sequence_files import read_sequences
from model_lib.data.splits import HoldOut, Sequences, protocol_split
from model_lib.evaluation.metrics import evaluate_holdout
from model_lib.model.checkpoints import Checkpoints, restore_best_weights
from model_lib.model.distribute import cluster_position, distribution_strategy, shard_files, strategy_name, tf_config
from model_lib.model.examples import TrainingRows, bucket_width, updates_per_pass
from model_lib.model.losses import sampling_log_q
from model_lib.model.schedule import (
    LoopState,
    TrainingBudget,
    replan,
    set_plan,
    stop_early,
    track_early_stopping,
    validation_score,
)
from model_lib.model.steps import build_optimizer_and_model, make_epoch_dataset, make_train_step, train_round
from model_lib.progress import say
from model_lib.ranking import EXCLUDE_SEEN_POLICY, RepeatPolicy


@dataclass
class TrainingResult:
    model: object
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    sequences_per_second: float = 0.0
    resumed_after_epoch: int = 0
    strategy: str = "default"
    replicas: int = 1
    stopped_early: bool = False

    def finished(self, state: LoopState, sequences_per_round: int) -> TrainingResult:
        """Filled in from the final loop state; the speed counts only the rounds this process ran."""
        self.history, self.best_epoch, self.seconds = state.history, state.best_epoch, state.seconds
        sequences_seen = sequences_per_round * (len(self.history) - self.resumed_after_epoch)
        self.sequences_per_second = sequences_seen / max(self.seconds, 1e-9)
        return self


# --- evaluation ---
def evaluate_model(
    model,
    holdout: HoldOut,
    num_items: int,
    k_values=(10, 20),
    policy: RepeatPolicy = EXCLUDE_SEEN_POLICY,
    scorer=None,
    with_ranks: bool = False,
    catalogue_items: int | None = None,
) -> dict[str, float]:
    """The model's metrics on a hold-out with the shared metrics module (full ranking, the repeat policy's
    candidates), scored by the one scoring path (scoring.ModelScorer, XLA-compiled; pass one to reuse its
    compilations across validations).

    Users are scored shortest history first and each batch drops its all-padding columns (rounded up to a
    multiple of bucket_width, so few shapes compile): the model masks padding, so the scores are the same, only
    cheaper. The metrics do not depend on the order of users.
    """
    from model_lib.model.scoring import ModelScorer

    scorer = scorer or ModelScorer(model)
    scorer.refresh()
    sequences = holdout.inputs
    order = np.argsort(sequences.lengths, kind="stable")
    inputs = {name: values[order] for name, values in sequences.model_inputs().items()}
    full_width = sequences.items.shape[1]
    step = bucket_width(full_width)

    def score(batch):
        longest = int((batch["items"] != PAD_INDEX).sum(axis=1).max())
        width = min(full_width, max(1, -(-longest // step) * step))
        return scorer.score({name: np.asarray(v[:, -width:], np.int32) for name, v in batch.items()})

    older = [sequences.older_items[i] for i in order]
    targets = holdout.targets[order]
    result = evaluate_holdout(
        score,
        inputs,
        older,
        targets,
        num_items,
        k_values,
        policy=policy,
        with_ranks=with_ranks,
        catalogue_items=catalogue_items,
    )
    if with_ranks:  # back to the hold-out's order of users
        ranks = np.empty_like(result["ranks"])
        ranks[order] = result["ranks"]
        result["ranks"] = ranks
    return result


def trains_event_types(validation: HoldOut, model_settings: ModelSettings) -> bool:
    """Whether the next-event-type head is trained: its loss has a weight and the data holds more than one event
    type (on single-type data it could only learn a constant). Decided on the validation hold-out, which every
    worker reads whole, so all workers build the same network."""
    types = np.unique(validation.inputs.event_types)
    return model_settings.event_type_loss_weight > 0 and int((types > PAD_INDEX).sum()) > 1


# --- the settings a checkpoint must match (Checkpoints and resumable in model_lib/model/checkpoints.py) ---
def run_signature(settings: Settings, num_items: int, files: list[Path]) -> dict:
    """What a checkpoint must match to be resumed: the data it read and every setting that shapes training."""
    return {
        **settings.pick(HYPER_PARAMETERS),
        "num_items": num_items,
        "files": [path.name for path in files],
    }


def training_banner(rows, files, settings: Settings, pipeline, workers, budget, result, sampled, num_items) -> str:
    """The one line that says what this run trains on, how long and how."""
    return (
        f"training on {len(rows):,} windows of {settings.sessionize.seq_len} ({len(files)} files, this worker "
        f"{pipeline + 1}/{workers}), {budget.describe()}, batches of {settings.training.batch_size} per replica x "
        f"{result.replicas} replica(s) [{result.strategy}], {'sampled' if sampled else 'full'} softmax over "
        f"{num_items - FIRST_ITEM_INDEX:,} items, repeat policy {settings.repeat_rule().describe()}"
        + (" with the repeat mechanism" if result.model.repeat_mechanism else "")
        + (
            f", item-to-item transitions ({settings.model.transition_neighbours} neighbours per item)"
            if result.model.transitions is not None
            else ""
        )
        + (
            f", next event type head (loss weight {settings.model.event_type_loss_weight:g})"
            if result.model.event_type_head
            else ""
        )
    )


def open_checkpoints(checkpoint_dir, model, optimizer, epoch_counter, is_chief: bool) -> Checkpoints:
    """What a checkpoint holds. TensorFlow's object graph does not reach every Keras 3 variable through the model
    (the LSTM layers, kept in a list, were missing from the best-epoch checkpoint: a resumed run whose best epoch
    came before the restart got that epoch's other weights beside its last epoch's LSTM), nor the dropout seed
    generators' states: every variable is tracked explicitly, so a resumed run restores the same model and draws the
    same dropout masks as an uninterrupted one."""
    weights = {f"weight_{i}": v.value for i, v in enumerate(model.weights)}
    variables = {f"variable_{i}": v.value for i, v in enumerate(model.variables)}  # the seed states too
    return Checkpoints(
        checkpoint_dir,
        {"model": model, "optimizer": optimizer, "epoch": epoch_counter, **variables},
        weights,
        is_chief,
    )


@dataclass
class TrainingRun:
    """What the validation rounds of one run share."""

    model: object
    optimizer: object
    schedule: object
    epoch_counter: object
    budget: TrainingBudget
    validation: HoldOut
    num_items: int
    is_chief: bool
    distributed_step: Callable
    epoch_dataset: Callable
    checkpoints: Checkpoints
    policy: RepeatPolicy
    scorer: object = None


def set_up_run(
    strategy,
    rows: TrainingRows,
    validation: HoldOut,
    budget: TrainingBudget,
    num_items: int,
    settings: Settings,
    checkpoint_dir,
    position: tuple[int, int, bool],
    sampled: bool,
) -> TrainingRun:
    """The model, optimizer, train step, epoch datasets and checkpoints of a run, in the order TF needs them."""
    import keras
    import tensorflow as tf

    pipeline, workers, is_chief = position
    local_replicas = max(1, strategy.num_replicas_in_sync // workers)
    mixed = keras.mixed_precision.global_policy().name == "mixed_float16"
    model, optimizer, schedule, epoch_counter = build_optimizer_and_model(
        strategy, num_items, settings, budget.total_updates, mixed, trains_event_types(validation, settings.model)
    )
    log_q = tf.constant(sampling_log_q(rows.item_targets, num_items)) if sampled else None
    distributed_step = make_train_step(model, optimizer, strategy, settings.model, log_q, mixed)
    # Seeded by the input pipeline too, so workers do not draw the same rows of their shards in step.
    epoch_dataset = make_epoch_dataset(
        strategy,
        rows,
        settings.training.batch_size,
        budget.steps_per_round * local_replicas,
        settings.training.seed + 7919 * pipeline,
    )
    checkpoints = open_checkpoints(checkpoint_dir, model, optimizer, epoch_counter, is_chief)
    return TrainingRun(
        model,
        optimizer,
        schedule,
        epoch_counter,
        budget,
        validation,
        num_items,
        is_chief,
        distributed_step,
        epoch_dataset,
        checkpoints,
        settings.repeat_rule(),
    )


def run_round(
    epoch: int, planned: int, run: TrainingRun, training: TrainingSettings, verbose: int
) -> tuple[dict, dict]:
    """One validation round: its updates, then the validation pass; -> (the round's record, validation metrics)."""
    import keras

    budget, k = run.budget, training.eval_k
    steps = budget.steps_per_round
    if verbose:
        print(f"Validation round {epoch}/{planned} ({steps} updates)", flush=True)
    progress = keras.utils.Progbar(steps, verbose=verbose if run.is_chief else 0, stateful_metrics=["loss"])
    epoch_started = time.perf_counter()
    losses = train_round(run.distributed_step, run.epoch_dataset(epoch), training.seed, epoch, progress)
    validation_metrics = evaluate_model(run.model, run.validation, run.num_items, (k,), run.policy, run.scorer)
    record = {
        "epoch": epoch,
        "updates": epoch * steps,
        "learning_rate": float(run.optimizer.learning_rate),
        "loss": float(np.mean(losses)),
        "epoch_seconds": time.perf_counter() - epoch_started,
        **{f"val_{name}": value for name, value in validation_metrics.items() if name != "users"},
    }
    say(
        f"epoch {epoch}: loss={record['loss']:.4f} val HR@{k}={validation_metrics[f'hr_{k}']:.4f} "
        f"val NDCG@{k}={validation_metrics[f'ndcg_{k}']:.4f} ({record['epoch_seconds']:.0f}s)",
    )
    return record, validation_metrics


def run_rounds(run: TrainingRun, state: LoopState, training: TrainingSettings, verbose: int, on_epoch_end) -> None:
    """The validation rounds left in the budget, a checkpoint after each, until early stopping; then the best
    round's weights are put back."""
    best_weights = None
    stopped = state.waited >= training.patience
    # The plan of this budget (a resumed run may have been given a longer one); the time budget re-plans below.
    state.planned_rounds = run.budget.rounds
    set_plan(run.schedule, state.planned_rounds * run.budget.steps_per_round)
    epoch = len(state.history)
    while not stopped and epoch < state.planned_rounds:
        epoch += 1
        record, validation_metrics = run_round(epoch, state.planned_rounds, run, training, verbose)
        state.history.append(record)
        if on_epoch_end:
            on_epoch_end(epoch, record)
        improved = track_early_stopping(state, epoch, *validation_score(validation_metrics, training), training)
        if improved:
            best_weights = run.model.get_weights()
        run.epoch_counter.assign(epoch)
        state.seconds += record["epoch_seconds"]
        if note := replan(state, run.budget, training, run.schedule):
            say(note)
        run.checkpoints.save(state, improved)
        stopped = stop_early(state, training)
    restore_best_weights(run.model, best_weights, state, run.checkpoints)


def read_training_data(files: list[Path], settings: Settings, num_items: int, pipeline: int, workers: int, validation):
    """This worker's training rows (its shard of the files), the validation hold-out of all of them, and the
    transition table of all of them (None without the transitions), the same on every worker."""
    train = protocol_split(read_sequences(shard_files(files, pipeline, workers))).train
    if validation is None:
        validation = protocol_split(read_sequences(files), settings.sessionize.seq_len).validation
    rows = TrainingRows.from_sequences(train, settings.sessionize.seq_len, settings.stride)
    return rows, validation, transition_table(files, train if workers == 1 else None, num_items, settings)


def transition_table(
    files: list[Path], train: Sequences | None, num_items: int, settings: Settings
) -> NeighbourTable | None:
    """The co-occurrence table of the training part of the protocol split (`train`, else read from `files`): held-out
    events never enter it. None when the model has no transitions."""
    model = settings.model
    if not model.transition_neighbours:
        return None
    if train is None:
        train = protocol_split(read_sequences(files)).train
    return NeighbourTable.from_histories(train.items, num_items, model.transition_neighbours, model.transition_window)


def train_next_item_model(
    sequence_files: list[Path],
    num_items: int,
    settings: Settings,
    checkpoint_dir: Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    verbose: int = 1,
    max_steps_per_epoch: int | None = None,
    validation: HoldOut | None = None,
) -> TrainingResult:
    """Trains on the sequence Parquet files (see the module docstring); returns the best epoch's model.

    `validation`: the protocol split's validation hold-out of all the files, when the caller has already read it.
    """
    import keras

    from model_lib.model.scoring import ModelScorer

    files = sorted(Path(path) for path in sequence_files)
    strategy = distribution_strategy()  # first: a multi-worker strategy must exist before any other TF work
    keras.utils.set_random_seed(settings.training.seed)
    pipeline, workers, is_chief = cluster_position(tf_config())
    replicas = strategy.num_replicas_in_sync
    rows, validation, table = read_training_data(files, settings, num_items, pipeline, workers, validation)
    steps_per_pass = updates_per_pass(files, rows, settings, workers, max(1, replicas // workers))
    budget = TrainingBudget.of(settings.training, steps_per_pass, max_steps_per_epoch)
    sampled = settings.model.uses_sampled_softmax(num_items)
    run = set_up_run(
        strategy, rows, validation, budget, num_items, settings, checkpoint_dir, (pipeline, workers, is_chief), sampled
    )
    if table is not None:
        run.model.transitions.set_table(table.indices, table.weights)
    signature = run_signature(settings, num_items, files)
    state = run.checkpoints.restore(signature) or LoopState(signature)
    result = TrainingResult(
        model=run.model, strategy=strategy_name(strategy), replicas=replicas, resumed_after_epoch=len(state.history)
    )
    if result.resumed_after_epoch:
        say(
            f"resuming after epoch {result.resumed_after_epoch} from {checkpoint_dir} (best so far: epoch "
            f"{state.best_epoch}, validation NDCG@{settings.training.eval_k} {state.best_score:.4f})"
        )
    say(training_banner(rows, files, settings, pipeline, workers, budget, result, sampled, num_items))
    run.scorer = ModelScorer(run.model)
    run_rounds(run, state, settings.training, verbose, on_epoch_end)
    result.stopped_early = state.waited >= settings.training.patience
    return result.finished(state, budget.steps_per_round * settings.training.batch_size * replicas)
