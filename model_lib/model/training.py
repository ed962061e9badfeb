"""Training the next-item model: a custom loop over tf.distribute, checkpoints, early stopping, two losses.

Strategy (`distribution_strategy`): MultiWorkerMirroredStrategy when TF_CONFIG names a cluster of several tasks,
MirroredStrategy over the local GPUs when there are several, otherwise the default one-device strategy. On GPUs
the layers compute in mixed float16 (with loss scaling). The loop is our own because Keras 3 `fit` fails under
MultiWorkerMirroredStrategy; `settings.batch_size` is per replica.

Input: the sequence Parquet files are dealt out to the workers (file i to input pipeline i mod n); each worker
reads only its files, applies the accuracy protocol (`splits.protocol_split`) and trains on the training part.
Every worker evaluates the whole validation hold-out, so all take the same early-stopping decision. Every worker
runs the same number of steps per epoch (from the Parquet row counts of all shards); a step's batch holds rows of
similar length, trimmed to a multiple of `bucket_width` columns, so little time goes into padding.

Examples: every window of `seq_len` events of a user's stored history (`history_len`), the newest first and
`window_stride` apart, so a user with 2,000 events teaches more than one window.

Budget: `max_updates` optimizer updates (or `epochs` passes over the data when it is 0), validated every
`eval_every_updates` (or once per pass); the learning rate warms up linearly over `warmup_share` of the budget,
then decays along a cosine to `min_lr_ratio` of itself. Early stopping: after `patience` validations whose NDCG@K
did not exceed the last reference by `early_stop_stderr` standard errors (a small validation set is noisy); the
weights of the best validation are kept. The validation pass is the XLA-compiled scoring path (recommender.ModelScorer).

Loss, averaged over the positions t whose target (the item at t + 1) is a known item:
    full     cross-entropy of the softmax over the whole catalogue
    sampled  cross-entropy over [target, S negatives drawn from Q = unigram^0.75], every logit corrected by
             - log(S * Q(item)) (the log-Q correction; without it popular items are over-penalised); a negative
             equal to the target is masked out
  with the repeat mechanism (on when the repeat policy lets seen items be recommended): - log of the mixture
             g * repeat(target) + (1 - g) * P_explore(target), P_explore from the full or sampled softmax above
  + event_type_loss_weight * cross-entropy of the next event type (the optional auxiliary head)

Checkpoints: after every epoch the chief saves model, optimizer and loop state (epoch, early-stopping counters,
history) under `checkpoint_dir`; the best epoch's weights are kept in a second checkpoint. A run given the same
folder resumes after the last saved epoch, so a killed task's retry continues instead of starting over.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_lib.config import Settings
from model_lib.contracts import FIRST_ITEM_INDEX, PAD_INDEX
from model_lib.data.splits import HoldOut, Sequences, next_item_pairs, protocol_split
from model_lib.evaluation.metrics import EXCLUDE_SEEN_POLICY, RepeatPolicy, evaluate_holdout
from model_lib.model.checkpoints import Checkpoints
from model_lib.model.distribute import cluster_position, distribution_strategy, shard_files, strategy_name, tf_config
from model_lib.model.losses import next_item_loss, sampling_log_q
from model_lib.storage.lake import read_sequences

# The settings that shape a trained model: logged with every run, and a checkpoint resumes only if they match.
HYPER_PARAMETERS = (
    "seq_len",
    "embedding_dim",
    "hidden_dim",
    "lstm_layers",
    "attention_blocks",
    "attention_heads",
    "dropout",
    "learning_rate",
    "batch_size",
    "seed",
    "softmax",
    "sampled_negatives",
    "event_type_loss_weight",
    "history_len",
    "window_stride",
    "max_updates",
    "eval_every_updates",
    "lr_schedule",
    "warmup_share",
    "min_lr_ratio",
    "repeat_policy",
    "repeatable_event_types",
)


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

    def finished(self, state: dict, sequences_per_round: int) -> TrainingResult:
        """Filled in from the final loop state; the speed counts only the rounds this process ran."""
        self.history, self.best_epoch, self.seconds = state["history"], state["best_epoch"], state["seconds"]
        sequences_seen = sequences_per_round * (len(self.history) - self.resumed_after_epoch)
        self.sequences_per_second = sequences_seen / max(self.seconds, 1e-9)
        return self


def training_examples(files: list[Path], settings: Settings) -> int:
    """About how many training windows these sequence files give (from their `length` column only): what every
    worker's step count is computed from, so all run the same number of steps."""
    import pyarrow.parquet as pq

    lengths = np.concatenate([pq.read_table(path, columns=["length"])["length"].to_numpy() for path in files])
    inputs = np.maximum(lengths - 3, 0)  # two held-out events, and the last input has no next item
    return int(window_counts(inputs, settings.seq_len, settings.stride).sum())


# --- batches ---
@dataclass(frozen=True)
class TrainingRows:
    """Next-item training pairs: inputs (N, T) per feature, item and event-type targets (N, T), real lengths (N,)."""

    inputs: dict[str, np.ndarray]
    item_targets: np.ndarray
    type_targets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_sequences(cls, train: Sequences, steps: int | None = None, stride: int | None = None) -> TrainingRows:
        """Next-item pairs of every window of `steps` inputs (default: the whole width), newest first and `stride`
        apart (default: `steps`), over each user's stored history."""
        inputs, item_targets, type_targets = next_item_pairs(train)
        if steps is not None and inputs["items"].shape[1] > steps:
            lengths = (inputs["items"] != PAD_INDEX).sum(axis=1)
            rows, columns = window_columns(lengths, inputs["items"].shape[1], steps, stride or steps)
            inside = columns >= 0

            def windows(values):
                return np.where(inside, values[rows[:, None], np.maximum(columns, 0)], PAD_INDEX)

            inputs = {name: windows(values) for name, values in inputs.items()}
            item_targets, type_targets = windows(item_targets), windows(type_targets)
        # A target needs some history: the first event of a window, predicted from padding, is not trained on.
        has_input = inputs["items"] != PAD_INDEX
        item_targets = np.where(has_input, item_targets, PAD_INDEX)
        type_targets = np.where(has_input, type_targets, PAD_INDEX)
        keep = (item_targets >= FIRST_ITEM_INDEX).any(axis=1)
        inputs = {name: values[keep].astype(np.int32) for name, values in inputs.items()}
        return cls(
            inputs,
            item_targets[keep].astype(np.int32),
            type_targets[keep].astype(np.int32),
            (inputs["items"] != PAD_INDEX).sum(axis=1),
        )

    def __len__(self) -> int:
        return len(self.item_targets)


def window_counts(lengths: np.ndarray, steps: int, stride: int) -> np.ndarray:
    """Training windows of `steps` per row of `lengths` real next-item pairs, `stride` apart (at least one)."""
    return 1 + np.maximum(0, -(-(lengths - steps) // stride))


def window_columns(lengths: np.ndarray, width: int, steps: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `width` columns, left-padded, with `lengths` real columns -> (window rows (W,), columns (W, steps)):
    windows ending at the last column, then `stride` earlier, until a window reaches the oldest real column.
    Columns < 0 lie before the row's start (padding)."""
    counts = window_counts(lengths, steps, stride)
    rows = np.repeat(np.arange(len(lengths)), counts)
    nth = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    ends = width - nth * stride
    return rows, ends[:, None] - steps + np.arange(steps)[None, :]


def bucket_width(steps: int) -> int:
    """Batches are trimmed to multiples of this many columns: at most ~8 shapes, so few XLA compilations."""
    return max(1, -(-steps // 8))


def epoch_batches(rows: TrainingRows, batch_size: int, batches: int, seed: int, epoch: int) -> Iterator[tuple]:
    """Exactly `batches` full batches for one epoch, the same for the same (seed, epoch) wherever it runs.

    Rows are shuffled (reshuffled again if more batches are asked for than one pass gives), sorted by length within
    pools of 32 batches, cut into batches whose order is shuffled, and each batch keeps only its last
    `width` columns (left padding), width = its longest row rounded up to a multiple of `bucket_width`.
    """
    rng = np.random.default_rng([seed, epoch])
    needed = batches * batch_size
    order = np.concatenate([rng.permutation(len(rows)) for _ in range(-(-needed // max(len(rows), 1)))])[:needed]
    pool = 32 * batch_size
    chunks = []
    for start in range(0, needed, pool):
        members = order[start : start + pool]
        members = members[np.argsort(rows.lengths[members], kind="stable")]
        chunks.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
    full_width = rows.item_targets.shape[1]
    step = bucket_width(full_width)
    for position in rng.permutation(len(chunks)):
        members = chunks[position]
        width = min(full_width, max(1, -(-int(rows.lengths[members].max()) // step) * step))
        inputs = {name: values[members, -width:] for name, values in rows.inputs.items()}
        yield inputs, rows.item_targets[members, -width:], rows.type_targets[members, -width:]


# --- evaluation ---
def evaluate_model(
    model,
    holdout: HoldOut,
    num_items: int,
    k_values=(10, 20),
    policy: RepeatPolicy = EXCLUDE_SEEN_POLICY,
    scorer=None,
) -> dict[str, float]:
    """The model's metrics on a hold-out with the shared metrics module (full ranking, the repeat policy's
    candidates), scored by the one scoring path (recommender.ModelScorer, XLA-compiled; pass one to reuse its
    compilations across validations).

    Users are scored shortest history first and each batch drops its all-padding columns (rounded up to a
    multiple of bucket_width, so few shapes compile): the model masks padding, so the scores are the same, only
    cheaper. The metrics do not depend on the order of users.
    """
    from model_lib.serving.recommender import ModelScorer

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
    return evaluate_holdout(score, inputs, older, holdout.targets[order], num_items, k_values, policy=policy)


# --- the settings a checkpoint must match (Checkpoints and resumable in model_lib/model/checkpoints.py) ---
def run_signature(settings: Settings, num_items: int, files: list[Path]) -> dict:
    """What a checkpoint must match to be resumed: the data it read and every setting that shapes training."""
    return {
        **{key: getattr(settings, key) for key in HYPER_PARAMETERS},
        "num_items": num_items,
        "files": [path.name for path in files],
    }


# --- budget, learning rate and early stopping ---
@dataclass(frozen=True)
class TrainingBudget:
    """`rounds` validation rounds of `steps_per_round` optimizer updates each."""

    rounds: int
    steps_per_round: int
    steps_per_pass: int

    @classmethod
    def of(cls, settings: Settings, steps_per_pass: int, max_steps_per_round: int | None = None) -> TrainingBudget:
        per_round = settings.eval_every_updates or steps_per_pass
        if max_steps_per_round:
            per_round = min(per_round, max_steps_per_round)
        rounds = -(-settings.max_updates // per_round) if settings.max_updates else settings.epochs
        return cls(rounds, per_round, steps_per_pass)

    @property
    def total_updates(self) -> int:
        return self.rounds * self.steps_per_round

    def describe(self) -> str:
        return (
            f"{self.total_updates:,} updates ({self.total_updates / max(self.steps_per_pass, 1):.1f} passes over "
            f"the data) validated every {self.steps_per_round}"
        )


def learning_rate_schedule(settings: Settings, total_updates: int):
    """Linear warm-up, then cosine decay to min_lr_ratio x learning_rate at the end of the budget (or constant)."""
    import keras

    if settings.lr_schedule == "constant":
        return settings.learning_rate
    warmup = int(settings.warmup_share * total_updates)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=settings.learning_rate * settings.min_lr_ratio,
        decay_steps=max(1, total_updates - warmup),
        alpha=settings.min_lr_ratio,
        warmup_target=settings.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def track_early_stopping(state: dict, epoch: int, score: float, stderr: float, settings: Settings) -> bool:
    """Updates the loop state with one validation; True when it is the best so far (its weights are kept).

    The patience counter restarts only when the score beats the reference (the score at the last restart) by
    more than early_stop_stderr standard errors: noise on a small validation set does not keep a run alive, and
    slow real gains add up until they count.
    """
    improved = score > state["best_score"]
    if improved:
        state.update(best_score=score, best_epoch=epoch)
    if score > state.get("reference_score", -1.0) + settings.early_stop_stderr * stderr:
        state.update(reference_score=score, waited=0)
    else:
        state["waited"] += 1
    return improved


# --- the loop ---
def build_next_item_model(num_items: int, settings: Settings):
    from model_lib.model.network import NextItemModel
    from model_lib.serving.recommender import build_model

    model = NextItemModel(
        num_items=num_items,
        num_event_types=settings.num_event_types,
        num_gap_buckets=settings.num_gap_buckets,
        embedding_dim=settings.embedding_dim,
        hidden_dim=settings.hidden_dim,
        lstm_layers=settings.lstm_layers,
        dropout=settings.dropout,
        event_type_head=settings.event_type_loss_weight > 0,
        repeat_mechanism=settings.repeat_rule().allows_repeats,
        attention_blocks=settings.attention_blocks,
        attention_heads=settings.attention_heads,
    )
    build_model(model)
    return model


def make_train_step(model, optimizer, strategy, settings: Settings, log_q, mixed: bool):
    """-> step(inputs, item_targets, type_targets, sample_seed): one optimizer update on every replica (the inner
    loss and gradient XLA-compiled when settings.xla), returning the loss averaged over the replicas."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    @tf.function(jit_compile=settings.xla, reduce_retracing=True)
    def loss_and_gradients(inputs, item_targets, type_targets, sample_seed):
        with tf.GradientTape() as tape:
            loss = next_item_loss(model, inputs, item_targets, type_targets, settings, log_q, sample_seed)
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


def make_epoch_dataset(strategy, rows: TrainingRows, settings: Settings, batches: int, seed: int):
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
                lambda: epoch_batches(rows, settings.batch_size, batches, seed, epoch), output_signature=signature
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


def new_loop_state(signature: dict) -> dict:
    """The loop state a run starts from (checkpointed as JSON after every round)."""
    return {
        "signature": signature,
        "history": [],
        "best_score": -1.0,
        "best_epoch": 0,
        "reference_score": -1.0,
        "waited": 0,
        "seconds": 0.0,
    }


def updates_per_pass(files: list[Path], rows: TrainingRows, settings: Settings, workers: int, local_replicas: int):
    """Updates per pass over the data. Every worker runs the same number: from the largest shard's window count."""
    shard_sizes = [
        training_examples(shard_files(files, index, workers), settings) if workers > 1 else len(rows)
        for index in range(workers)
    ]
    return -(-max(shard_sizes) // (settings.batch_size * local_replicas))


def training_banner(rows, files, settings: Settings, pipeline, workers, budget, result, sampled, num_items) -> str:
    """The one line that says what this run trains on, how long and how."""
    return (
        f"[reco] training on {len(rows):,} windows of {settings.seq_len} ({len(files)} files, this worker "
        f"{pipeline + 1}/{workers}), {budget.describe()}, batches of {settings.batch_size} per replica x "
        f"{result.replicas} replica(s) [{result.strategy}], {'sampled' if sampled else 'full'} softmax over "
        f"{num_items - FIRST_ITEM_INDEX:,} items, repeat policy {settings.repeat_rule().describe()}"
        + (" with the repeat mechanism" if result.model.repeat_mechanism else "")
    )


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
    import tensorflow as tf

    from model_lib.serving.recommender import ModelScorer

    files = sorted(Path(path) for path in sequence_files)
    strategy = distribution_strategy()  # first: a multi-worker strategy must exist before any other TF work
    keras.utils.set_random_seed(settings.seed)
    pipeline, workers, is_chief = cluster_position(tf_config())
    replicas = strategy.num_replicas_in_sync
    local_replicas = max(1, replicas // workers)

    train = protocol_split(read_sequences(shard_files(files, pipeline, workers))).train
    if validation is None:
        validation = protocol_split(read_sequences(files), settings.seq_len).validation
    rows = TrainingRows.from_sequences(train, settings.seq_len, settings.stride)
    steps_per_pass = updates_per_pass(files, rows, settings, workers, local_replicas)
    budget = TrainingBudget.of(settings, steps_per_pass, max_steps_per_epoch)
    steps = budget.steps_per_round
    sampled = settings.uses_sampled_softmax(num_items)
    mixed = keras.mixed_precision.global_policy().name == "mixed_float16"
    policy = settings.repeat_rule()

    with strategy.scope():
        model = build_next_item_model(num_items, settings)
        optimizer = keras.optimizers.Adam(learning_rate_schedule(settings, budget.total_updates))
        if mixed:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        epoch_counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    log_q = tf.constant(sampling_log_q(rows.item_targets, num_items)) if sampled else None
    distributed_step = make_train_step(model, optimizer, strategy, settings, log_q, mixed)
    # Seeded by the input pipeline too, so workers do not draw the same rows of their shards in step.
    epoch_dataset = make_epoch_dataset(
        strategy, rows, settings, steps * local_replicas, settings.seed + 7919 * pipeline
    )

    # The dropout seed generators' states are not tracked through the model: saved explicitly, a resumed run
    # draws the same dropout masks as an uninterrupted one.
    random_states = {f"random_state_{i}": v.value for i, v in enumerate(model.non_trainable_variables)}
    checkpoints = Checkpoints(
        checkpoint_dir,
        {"model": model, "optimizer": optimizer, "epoch": epoch_counter, **random_states},
        model,
        is_chief,
    )
    signature = run_signature(settings, num_items, files)
    state = checkpoints.restore(signature) or new_loop_state(signature)
    result = TrainingResult(
        model=model,
        strategy=strategy_name(strategy),
        replicas=replicas,
        resumed_after_epoch=len(state["history"]),
    )
    if result.resumed_after_epoch:
        print(
            f"[reco] resuming after epoch {result.resumed_after_epoch} from {checkpoint_dir} "
            f"(best so far: epoch {state['best_epoch']}, validation NDCG@{settings.eval_k} {state['best_score']:.4f})",
            flush=True,
        )
    print(training_banner(rows, files, settings, pipeline, workers, budget, result, sampled, num_items), flush=True)
    k = settings.eval_k
    best_weights = None
    scorer = ModelScorer(model)
    stopped = state["waited"] >= settings.patience
    for epoch in range(len(state["history"]) + 1, budget.rounds + 1):
        if stopped:
            break
        if verbose:
            print(f"Validation round {epoch}/{budget.rounds} ({steps} updates)", flush=True)
        progress = keras.utils.Progbar(steps, verbose=verbose if is_chief else 0, stateful_metrics=["loss"])
        epoch_started = time.perf_counter()
        losses = train_round(distributed_step, epoch_dataset(epoch), settings.seed, epoch, progress)
        validation_metrics = evaluate_model(model, validation, num_items, (k,), policy, scorer)
        record = {
            "epoch": epoch,
            "updates": epoch * steps,
            "learning_rate": float(optimizer.learning_rate),
            "loss": float(np.mean(losses)),
            "epoch_seconds": time.perf_counter() - epoch_started,
            **{f"val_{name}": value for name, value in validation_metrics.items() if name != "users"},
        }
        state["history"].append(record)
        print(
            f"[reco] epoch {epoch}: loss={record['loss']:.4f} val HR@{k}={validation_metrics[f'hr_{k}']:.4f} "
            f"val NDCG@{k}={validation_metrics[f'ndcg_{k}']:.4f} ({record['epoch_seconds']:.0f}s)",
            flush=True,
        )
        if on_epoch_end:
            on_epoch_end(epoch, record)
        improved = track_early_stopping(
            state, epoch, validation_metrics[f"ndcg_{k}"], validation_metrics[f"ndcg_{k}_stderr"], settings
        )
        if improved:
            best_weights = model.get_weights()
        epoch_counter.assign(epoch)
        state["seconds"] += record["epoch_seconds"]
        checkpoints.save(state, improved)
        if state["waited"] >= settings.patience:
            print(
                f"[reco] early stop: {state['waited']} validations without a NDCG@{k} gain of more than "
                f"{settings.early_stop_stderr} standard errors over {state['reference_score']:.4f}",
                flush=True,
            )
            stopped = True
    # The best epoch's weights: from memory when this process saw it, else from the best checkpoint.
    if best_weights is not None:
        model.set_weights(best_weights)
    elif state["best_epoch"]:
        checkpoints.restore_best()
    checkpoints.close()
    return result.finished(state, steps * settings.batch_size * replicas)
