"""The eight groups `Settings` is made of (model_lib/config/__init__.py): each field, its default, its check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, model_validator

from model_lib.config.checks import (
    ENCODERS,
    LR_SCHEDULES,
    MISSING_RAW_ACTIONS,
    NIGHTLY_EXTRAS,
    SESSIONIZE_MODES,
    SOFTMAX_MODES,
    TRAINING_LAUNCHERS,
    NonNegative,
    NonNegativeInt,
    Positive,
    Share,
    _each_one_of,
    _one_of,
    _top_k_bound,
    _warehouse_scheme,
)
from model_lib.config.lake import LakeSettings
from model_lib.ranking import REPEAT_POLICIES


class EngineSettings(BaseModel):
    """The engines and stores the platform talks to. The stores default to files under lake.data_dir."""

    spark_master: str = "local[2]"  # for `reco` commands; the DAGs use the `spark_default` connection
    # Heap of the driver JVM and of each executor. Under spark-submit (the DAGs) they are passed on its command
    # line: a running JVM cannot be given more heap from inside the session.
    spark_driver_memory: str = "4g"
    spark_executor_memory: str = "2g"  # each executor's heap (spark-submit --executor-memory)
    # The most shuffle partitions a job uses. Sessionize sizes its shuffles to the lines it read
    # (storage/spark.size_shuffles): one partition per spark_rows_per_shuffle_partition rows (about 130 MB of
    # events), at least one per core, at most this; a day's few MB over 8 partitions cost a 1M-event night 2 s.
    spark_shuffle_partitions: int = 8
    spark_rows_per_shuffle_partition: Positive = 500_000  # rows per partition when sessionize sizes its shuffles
    # Users whose per-user collections (the sequences' collect_list / collect_set) one task keeps in a hash map
    # before Spark falls back to sorting them; Spark's default of 128 sent every night's per-user step (1,300 users a
    # task) down the slower sort-based path. A user's buffers hold at most L+1 events and their older item ids.
    spark_hash_aggregate_keys: Positive = 20_000
    # Whether cached frames are compressed in memory. A job caches a frame to read it two or three times within
    # minutes, and choosing and applying the encodings cost more than the memory saved: uncompressed, a 10M-event
    # rebuild took 146 s instead of 169 s for a cache 29% larger (179 instead of 139 MiB per million raw lines).
    # A cache that outgrows memory spills to local disk; true when memory rather than time is short.
    spark_compress_cache: bool = False
    # An incremental sessionize night (one day's events: seconds of work) runs its JVM with the JIT's quick tier
    # only (runtime.driver_java_options), and so does a recommend job whose last run was short (below); false keeps
    # the optimizing tier for every job, e.g. for days of tens of millions of events.
    spark_quick_jit: bool = True
    # The recommend job's length follows the users it scores, so its JVM takes the quick tier when the job's latest
    # recorded run was shorter than this: measured here, the optimizing tier paid for its compiling in a cold job of
    # about 30 s (100,000 users: 32.4-33.6 s either way) and not in one of 7 s (ML-1M: 5.0-5.6 s against 6.5-7.0 s).
    spark_quick_jit_seconds: Positive = 20
    # Where the driver listens and how executors reach it: loopback on one machine; on a cluster, the address of
    # the machine running the driver (the Airflow worker in client mode) and 0.0.0.0.
    spark_driver_host: str = "127.0.0.1"
    spark_bind_address: str = "127.0.0.1"  # the address the driver binds to (0.0.0.0 on a cluster)
    warehouse_url: Annotated[str | None, AfterValidator(_warehouse_scheme)] = None  # duckdb:///abs/path.duckdb
    # Default sqlite:///<data_dir>/mlflow/mlflow.db; an http:// server on a cluster.
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: Path | None = None  # default <data_dir>/mlflow/artifacts
    airflow_home: Path | None = None  # default <data_dir>/airflow


class SessionizeSettings(BaseModel):
    """The raw-event contract (what a valid event is) and the padded sequences it becomes."""

    # The known event types, in order (their position is the model's event-type input).
    event_types: list[str] = Field(default_factory=lambda: ["view", "click", "add_to_cart", "purchase", "like", "rate"])
    session_gap_minutes: Positive = 30  # inactivity that starts a new session
    seq_len: Positive = 50  # events the model reads per user (its window L)
    # Events kept per user in the sequences (0 = seq_len): a longer history lets training cut several windows of
    # seq_len from one long user (training.window_stride apart) while scoring still reads the last seq_len. On
    # ML-1M, 500 keeps every event of 93% of the users and gives training 3.3x the events of the last 50 alone;
    # it bounds what one user costs the sessionize state (its last 500 events).
    history_len: NonNegativeInt = 500
    min_item_count: Positive = 5  # items seen fewer times map to the unknown index 1
    max_vocab_size: Positive = 100_000  # at most this many items in the vocabulary, most frequent first
    max_gap_bucket: int = 20  # cap of the log2 time-gap buckets the model reads
    # What one user can cost the state (a bot, a broken producer): the distinct items older than the stored history
    # kept per user, most recent first (`exclude_seen` excludes those and the history; the rest may be recommended
    # again), and the day's events above which a user is named in the run's stats and log (their events still
    # enter the sequences, bounded by history_len and this cap).
    max_older_items: Positive = 10_000
    max_user_day_events: Positive = 100_000  # a user with more valid events in a day is named in the run stats
    # An item id below min_item_count with no event for this many days leaves the state's item counts (ids that never
    # reach the vocabulary are not kept forever; vocabulary.running_item_counts has the rule).
    item_count_idle_days: Positive = 90
    # An event may arrive in a dt folder up to this long after its own time; older arrivals are `too_late`.
    allowed_lateness_hours: int = 72
    # Clocks drift: an event up to this far past the end of its dt is accepted, further is `future_ts`.
    future_tolerance_minutes: int = 60
    max_line_chars: Positive = 8192  # longer raw lines are `too_long`
    max_id_chars: Positive = 256  # longer ids are `too_long`
    # The run fails (after writing the quarantine) when more than this share of the lines it read is quarantined.
    max_quarantine_share: Share = 0.05
    # auto = incremental from the previous day's state when it exists and matches, else a full rebuild.
    sessionize_mode: Annotated[str, _one_of(SESSIONIZE_MODES)] = "auto"

    @property
    def num_event_types(self) -> int:
        """Event-type vocabulary size: 0 = padding, then the configured types in order."""
        return len(self.event_types) + 1

    @property
    def stored_events(self) -> int:
        """Events per user in the sequence files and the sessionize state: the history, at least the model's window."""
        return max(self.seq_len, self.history_len)

    @property
    def num_gap_buckets(self) -> int:
        """0 = padding, 1 = first event of a user, 2.. = log2-scaled gap seconds up to max_gap_bucket."""
        return self.max_gap_bucket + 1


class ModelSettings(BaseModel):
    """The network over a window of sessionize.seq_len events: its shape, its loss and its compilation."""

    model_name: str = "reco-lstm-attention"  # its name in the MLflow registry
    embedding_dim: Positive = 64  # item, event-type and gap embeddings
    hidden_dim: Positive = 64  # LSTM and attention width
    lstm_layers: int = 1  # stacked LSTM layers
    # 0: one NARM-style attention over the LSTM states; n > 0: n transformer blocks (causal self-attention with
    # attention_heads heads + feed-forward, residuals, layer norm) over them. See model_lib/model/network.py.
    attention_blocks: NonNegativeInt = 0
    attention_heads: Positive = 2  # heads of each attention block (hidden_dim must split into them)
    # What reads the events before the attention (network.ENCODERS): lstm; nextitnet (dilated causal convolutions,
    # scored with TensorFlow at night: the numpy encoder covers the LSTM); svae (the LSTM, then a Gaussian latent
    # whose KL divergence from N(0, I) weighs kl_weight in the loss).
    encoder: Annotated[str, _one_of(ENCODERS)] = "lstm"
    kl_weight: NonNegative = 0.05  # the svae encoder's KL term weight
    dropout: float = 0.1  # on the embeddings and inside the attention blocks
    xla: bool = True  # XLA-compiles the train step (the LSTM loop runs much faster on CPU)
    # full = softmax over the whole catalogue; sampled = `sampled_negatives` items drawn from the unigram^0.75
    # distribution with the log-Q correction; auto = sampled once the catalogue exceeds sampled_softmax_min_items.
    softmax: Annotated[str, _one_of(SOFTMAX_MODES)] = "auto"
    sampled_negatives: Positive = 1000  # negatives per batch of the sampled softmax
    sampled_softmax_min_items: Positive = 100_000  # auto switches to the sampled softmax above this many items
    # Item-to-item transitions inside the model (layers.ItemTransitions): each item's transition_neighbours most
    # co-occurring items (at most transition_window events apart in the training histories), mixed into the
    # next-item distribution from the user's last transition_recent items by a learned gate; 0 = off. The window and
    # the recent items are the item-kNN baseline's (data/cooccurrence.KnnParams).
    transition_neighbours: NonNegativeInt = 100
    transition_window: Positive = 3  # co-occurring items at most this many events apart
    transition_recent: Positive = 5  # the user's last items the transitions are mixed in from
    # Weight of the auxiliary next-event-type loss (view / cart / purchase / like ...). The head is trained only when
    # the data holds several event types (it feeds the nightly user_next_behaviour table); 0 = never.
    event_type_loss_weight: NonNegative = 0.2

    @model_validator(mode="after")
    def _heads_split_hidden(self) -> ModelSettings:
        if self.attention_blocks and self.hidden_dim % self.attention_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} does not split into {self.attention_heads} attention heads")
        return self

    def uses_sampled_softmax(self, num_items: int) -> bool:
        return self.softmax == "sampled" or (self.softmax == "auto" and num_items > self.sampled_softmax_min_items)


class TrainingSettings(BaseModel):
    """One training run: budget, optimizer, learning-rate schedule, early stopping, and its baselines."""

    learning_rate: float = 2e-3  # Adam's peak learning rate
    # Small batches: on ML-1M the model needs many updates to leave the most-popular plateau (~4 epochs).
    batch_size: Positive = 64
    # Training budget, following the data (model/schedule.py): at most `epochs` passes over the training windows and
    # max_updates optimizer updates (0: no cap), validated once per pass but at most 25 times (or every
    # eval_every_updates), within train_minutes (0: no limit; the plan and its learning-rate schedule shrink to fit
    # once the first rounds show the pace). A large data set is capped by the updates (ML-1M: 31 passes), a small
    # one by the passes (300 users: ~9,400 updates), and early stopping ends either when validation stops improving.
    epochs: Positive = 200
    max_updates: NonNegativeInt = 10_000  # optimizer updates at most (0: no cap)
    eval_every_updates: NonNegativeInt = 0  # validate every N updates (0: once per pass, at most 25 times)
    train_minutes: NonNegative = 50.0  # time budget of one training (0: no limit)
    # Learning rate: linear warm-up over warmup_share of the budget, then cosine decay to min_lr_ratio x
    # learning_rate at its end (lr_schedule=cosine), or constant.
    lr_schedule: Annotated[str, _one_of(LR_SCHEDULES)] = "cosine"
    warmup_share: Share = 0.05  # share of the plan spent warming the learning rate up
    min_lr_ratio: Share = 0.1  # the cosine schedule ends at this share of the learning rate
    # Early stopping after `patience` validations without a gain of more than early_stop_stderr standard errors
    # of the validation NDCG (a small validation set is noisy); the best validation's weights are kept.
    patience: int = 8
    early_stop_stderr: NonNegative = 0.5  # a validation gain counts only above this many standard errors
    window_stride: NonNegativeInt = 0  # training windows over a long history start this many events apart (0: seq_len)
    seed: int = 42  # weights, batches, dropout, baselines, segments
    eval_k: int = 10  # K of the metrics the gate and early stopping judge by (NDCG@K)
    # Spark MLlib ALS (implicit) as a baseline in every training run; defaults tuned on the ML-1M validation target.
    als_baseline: bool = True
    als_rank: int = 128  # ALS baseline: latent factors
    als_reg_param: float = 0.01  # ALS baseline: regularisation
    als_alpha: float = 1.0  # ALS baseline: implicit-feedback confidence
    als_max_iter: int = 10  # ALS baseline: iterations
    # The name of hyper-parameters stored by `reco tune` (data_dir/tuned/<name>.json) that training applies; empty:
    # the settings as they are.
    tuned: str = ""


class GateSettings(BaseModel):
    """The floors a challenger must clear to become champion, and the one a champion must clear to be served."""

    # The challenger must beat the champion's hold-out NDCG@10 by more than this margin, recommend at least this
    # share of the catalogue (coverage@20) and know at least this share of the hold-out's events.
    promote_margin: float = 0.0
    promote_min_coverage: Share = 0.05  # coverage@20 floor of a challenger
    promote_min_known_share: Share = 0.9  # share of the hold-out's events a challenger's vocabulary must know
    # The nightly run refuses a champion that knows less than this share of the day's events: a model trained on
    # another catalogue would give everybody the popular fallback. Lower than the gate's floor, because a champion
    # ages between trainings while new items arrive.
    recommend_min_known_share: Share = 0.5


class ServingSettings(BaseModel):
    """What the nightly run recommends, and every metric (evaluation ranks exactly what would be served)."""

    top_k: Annotated[Positive, AfterValidator(_top_k_bound)] = 20  # recommendations per user, at most MAX_TOP_K
    # exclude_seen: never recommend an item the user has an event on (movies, books); allow_repeats: seen items stay
    # candidates (grocery, music, re-orders) and the model learns when people repeat. Under exclude_seen, items with
    # an event of a type in repeatable_event_types (e.g. ["purchase"]) stay candidates. See evaluation/metrics.py.
    repeat_policy: Annotated[str, _one_of(REPEAT_POLICIES)] = "exclude_seen"
    repeatable_event_types: list[str] = Field(default_factory=list)  # their items stay candidates under exclude_seen
    # User profiles: the nightly run clusters the users' vectors into this many segments (serving/profiles.py).
    profile_segments: Positive = 8
    # Anomalies: users whose day's events the model found least likely, at or above this percentile of the day's
    # scores, are published; an event outside the model's top anomaly_top_g counts as a miss (serving/anomalies.py).
    anomaly_percentile: Share = 0.99
    anomaly_top_g: Positive = 10  # an event outside the model's top g counts as a miss
    # The tables the nightly run writes beside recommendations; one left out gets no rows for the day (its
    # outputs are not computed: bench/scoring.py measures what they cost).
    nightly_extras: Annotated[list[str], _each_one_of(NIGHTLY_EXTRAS)] = list(NIGHTLY_EXTRAS)


class OrchestrationSettings(BaseModel):
    """How the DAGs wait for the day's data and where training runs (read when the DAG files are parsed)."""

    # The DAGs wait this long for lake/raw/events/dt=ds, looking every raw_poke_seconds, then skip the run
    # (downstream tasks skipped, yesterday's recommendations stay the latest) or fail it.
    raw_wait_minutes: NonNegative = 360.0
    raw_poke_seconds: NonNegative = 300.0  # how often the sensor looks
    on_missing_raw: Annotated[str, _one_of(MISSING_RAW_ACTIONS)] = "fail"  # skip or fail when the day never lands
    # local = the train task runs in the Airflow worker; kubernetes = a GPU pod (KubernetesPodOperator) runs
    # `reco train` from training_image, with its RECO_* settings from the Kubernetes secret training_env_secret.
    training_launcher: Annotated[str, _one_of(TRAINING_LAUNCHERS)] = "local"
    training_image: str = "reco-platform:latest"  # the training pod's image
    training_namespace: str = "reco"  # the training pod's namespace
    training_gpus: NonNegativeInt = 1  # nvidia.com/gpu limit of the training pod
    training_env_secret: str = "reco-settings"  # the Kubernetes secret holding the pod's RECO_* settings
    training_data_claim: str = "reco-data"  # the PersistentVolumeClaim holding data_dir, mounted at the same path


GROUPS: dict[str, type[BaseModel]] = {
    "lake": LakeSettings,
    "engines": EngineSettings,
    "sessionize": SessionizeSettings,
    "model": ModelSettings,
    "training": TrainingSettings,
    "gate": GateSettings,
    "serving": ServingSettings,
    "orchestration": OrchestrationSettings,
}
# Flat names are the public ones (environment variables, get_settings(...), MLflow params), so each is in one group.
GROUP_OF_FIELD: dict[str, str] = {field: group for group, model in GROUPS.items() for field in model.model_fields}
assert len(GROUP_OF_FIELD) == sum(len(model.model_fields) for model in GROUPS.values()), "a field name is in two groups"
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
    "transition_neighbours",
    "transition_window",
    "transition_recent",
    "encoder",
    "kl_weight",
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
assert set(HYPER_PARAMETERS) <= set(GROUP_OF_FIELD), "a hyper-parameter is not a setting"
