"""The one configuration object of the platform.

Every path, URI and knob lives here with a default for the embedded single-machine mode. Each field can be
overridden by an environment variable named RECO_<FIELD> (for example RECO_SEQ_LEN=100 or
RECO_WAREHOUSE_URL=duckdb:///tmp/w.duckdb). Jobs, DAGs, tests and benchmarks all call `get_settings()`;
nothing else hard-codes a path.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_lib.redaction import redact

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SESSIONIZE_MODES = ("auto", "full", "incremental")
SOFTMAX_MODES = ("auto", "full", "sampled")
MISSING_RAW_ACTIONS = ("skip", "fail")
LR_SCHEDULES = ("cosine", "constant")
TRAINING_LAUNCHERS = ("local", "kubernetes")
# The names evaluation.metrics uses (kept import-free here).
REPEAT_POLICIES = ("exclude_seen", "allow_repeats")
CHOICES = {
    "repeat_policy": REPEAT_POLICIES,
    "lr_schedule": LR_SCHEDULES,
    "sessionize_mode": SESSIONIZE_MODES,
    "softmax": SOFTMAX_MODES,
    "on_missing_raw": MISSING_RAW_ACTIONS,
    "training_launcher": TRAINING_LAUNCHERS,
}
MAX_TOP_K = 500  # the nightly table and the DAG form allow up to this many recommendations per user
PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Settings(BaseSettings):
    # An empty RECO_* variable (a template that rendered nothing) means "not set".
    model_config = SettingsConfigDict(env_prefix="RECO_", extra="ignore", env_ignore_empty=True)

    # --- where things live (embedded defaults under one project-local folder) ---
    data_dir: Path = PROJECT_ROOT / "data"
    lake_dir: Path | None = None
    warehouse_url: str | None = None  # duckdb:///abs/path.duckdb
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: Path | None = None
    airflow_home: Path | None = None

    # --- engines ---
    spark_master: str = "local[2]"
    # Heap of the driver JVM and of each executor. Under spark-submit (the DAGs) they are passed on its command
    # line: a running JVM cannot be given more heap from inside the session.
    spark_driver_memory: str = "4g"
    spark_executor_memory: str = "2g"
    spark_shuffle_partitions: int = 8
    # Where the driver listens and how executors reach it: loopback on one machine; on a cluster, the address of
    # the machine running the driver (the Airflow worker in client mode) and 0.0.0.0.
    spark_driver_host: str = "127.0.0.1"
    spark_bind_address: str = "127.0.0.1"

    # --- raw-event contract and sessionization ---
    event_types: list[str] = Field(default_factory=lambda: ["view", "click", "add_to_cart", "purchase", "like", "rate"])
    session_gap_minutes: int = 30
    seq_len: int = 50  # events the model reads per user (its window L)
    # Events kept per user in the sequences (0 = seq_len): a longer history lets training cut several windows of
    # seq_len from one long user (window_stride apart) while scoring still reads the last seq_len.
    history_len: int = 0
    min_item_count: int = 5
    max_vocab_size: int = 100_000
    max_gap_bucket: int = 20
    # An event may arrive in a dt folder up to this long after its own time; older arrivals are `too_late`.
    allowed_lateness_hours: int = 72
    # Clocks drift: an event up to this far past the end of its dt is accepted, further is `future_ts`.
    future_tolerance_minutes: int = 60
    max_line_chars: int = 8192
    max_id_chars: int = 256
    # The run fails (after writing the quarantine) when more than this share of the lines it read is quarantined.
    max_quarantine_share: float = 0.05
    # auto = incremental from the previous day's state when it exists and matches, else a full rebuild.
    sessionize_mode: str = "auto"

    # --- model and training ---
    model_name: str = "reco-lstm-attention"
    embedding_dim: int = 64
    hidden_dim: int = 64
    lstm_layers: int = 1
    # 0: one NARM-style attention over the LSTM states; n > 0: n transformer blocks (causal self-attention with
    # attention_heads heads + feed-forward, residuals, layer norm) over them. See model_lib/model/network.py.
    attention_blocks: int = 0
    attention_heads: int = 2
    dropout: float = 0.1
    learning_rate: float = 2e-3
    # Small batches: on ML-1M the model needs many updates to leave the most-popular plateau (~4 epochs).
    batch_size: int = 64
    # Training budget. max_updates > 0: that many optimizer updates, validated every eval_every_updates (0: once per
    # pass over the data), whatever the data's size; max_updates = 0: `epochs` passes over the data.
    epochs: int = 10
    max_updates: int = 0
    eval_every_updates: int = 0
    # Learning rate: linear warm-up over warmup_share of the budget, then cosine decay to min_lr_ratio x
    # learning_rate at its end (lr_schedule=cosine), or constant.
    lr_schedule: str = "cosine"
    warmup_share: float = 0.05
    min_lr_ratio: float = 0.1
    # Early stopping after `patience` validations without a gain of more than early_stop_stderr standard errors
    # of the validation NDCG (a small validation set is noisy); the best validation's weights are kept.
    patience: int = 3
    early_stop_stderr: float = 0.5
    window_stride: int = 0  # training windows over a long history start this many events apart (0: seq_len)
    seed: int = 42
    eval_k: int = 10
    # Promotion gate: the challenger must beat the champion's hold-out NDCG@10 by more than this margin, recommend
    # at least this share of the catalogue (coverage@20) and know at least this share of the hold-out's events.
    promote_margin: float = 0.0
    promote_min_coverage: float = 0.05
    promote_min_known_share: float = 0.9
    # The nightly run refuses a champion that knows less than this share of the day's events: a model trained on
    # another catalogue would give everybody the popular fallback. Lower than the gate's floor, because a champion
    # ages between trainings while new items arrive.
    recommend_min_known_share: float = 0.5
    xla: bool = True  # XLA-compiles the train step (the LSTM loop runs much faster on CPU)
    # full = softmax over the whole catalogue; sampled = `sampled_negatives` items drawn from the unigram^0.75
    # distribution with the log-Q correction; auto = sampled once the catalogue exceeds sampled_softmax_min_items.
    softmax: str = "auto"
    sampled_negatives: int = 1000
    sampled_softmax_min_items: int = 100_000
    # Spark MLlib ALS (implicit) as a baseline in every training run; defaults tuned on the ML-1M validation target.
    als_baseline: bool = True
    als_rank: int = 128
    als_reg_param: float = 0.01
    als_alpha: float = 1.0
    als_max_iter: int = 10
    # The name of hyper-parameters stored by `reco tune` (data_dir/tuned/<name>.json) that training applies; empty:
    # the settings as they are.
    tuned: str = ""
    # Weight of the auxiliary next-event-type loss (view / cart / purchase / like ...); 0 = no auxiliary head.
    event_type_loss_weight: float = 0.0

    # --- serving (and every metric: evaluation ranks exactly what would be served) ---
    top_k: int = 20  # recommendations per user, at most MAX_TOP_K
    # exclude_seen: never recommend an item the user has an event on (movies, books); allow_repeats: seen items stay
    # candidates (grocery, music, re-orders) and the model learns when people repeat. Under exclude_seen, items with
    # an event of a type in repeatable_event_types (e.g. ["purchase"]) stay candidates. See evaluation/metrics.py.
    repeat_policy: str = "exclude_seen"
    repeatable_event_types: list[str] = Field(default_factory=list)

    # --- orchestration (read when the DAG files are parsed) ---
    # The DAGs wait this long for lake/raw/events/dt=ds, looking every raw_poke_seconds, then skip the run
    # (downstream tasks skipped, yesterday's recommendations stay the latest) or fail it.
    raw_wait_minutes: float = 360.0
    raw_poke_seconds: float = 300.0
    on_missing_raw: str = "fail"
    # local = the train task runs in the Airflow worker; kubernetes = a GPU pod (KubernetesPodOperator) runs
    # `reco train` from training_image, with its RECO_* settings from the Kubernetes secret training_env_secret.
    training_launcher: str = "local"
    training_image: str = "reco-platform:latest"
    training_namespace: str = "reco"
    training_gpus: int = 1
    training_env_secret: str = "reco-settings"
    training_data_claim: str = "reco-data"  # the PersistentVolumeClaim holding data_dir, mounted at the same path

    @model_validator(mode="after")
    def _fill_derived_paths(self) -> Settings:
        self.data_dir = self.data_dir.resolve()
        if self.lake_dir is None:
            self.lake_dir = self.data_dir / "lake"
        if self.warehouse_url is None:
            self.warehouse_url = f"duckdb:///{self.data_dir / 'warehouse' / 'reco.duckdb'}"
        if self.mlflow_tracking_uri is None:
            self.mlflow_tracking_uri = f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"
        if self.mlflow_artifact_root is None:
            self.mlflow_artifact_root = self.data_dir / "mlflow" / "artifacts"
        if self.airflow_home is None:
            self.airflow_home = self.data_dir / "airflow"
        return self

    @field_validator(
        "top_k",
        "seq_len",
        "epochs",
        "batch_size",
        "embedding_dim",
        "hidden_dim",
        "attention_heads",
        "min_item_count",
        "max_vocab_size",
        "session_gap_minutes",
        "max_line_chars",
        "max_id_chars",
        "sampled_negatives",
        "sampled_softmax_min_items",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be a positive integer, got {value}")
        return value

    @field_validator("top_k")
    @classmethod
    def _top_k_bound(cls, value: int) -> int:
        if value > MAX_TOP_K:
            raise ValueError(f"top_k is at most {MAX_TOP_K}, got {value}")
        return value

    @field_validator(
        "max_quarantine_share",
        "promote_min_coverage",
        "promote_min_known_share",
        "recommend_min_known_share",
        "warmup_share",
        "min_lr_ratio",
    )
    @classmethod
    def _share(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be between 0 and 1, got {value}")
        return value

    @field_validator(
        "event_type_loss_weight",
        "raw_wait_minutes",
        "raw_poke_seconds",
        "training_gpus",
        "history_len",
        "attention_blocks",
        "window_stride",
        "max_updates",
        "eval_every_updates",
        "early_stop_stderr",
    )
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _repeatable_types_known(self) -> Settings:
        unknown = sorted(set(self.repeatable_event_types) - set(self.event_types))
        if unknown:
            raise ValueError(f"repeatable_event_types {unknown} are not among the event types {self.event_types}")
        return self

    @model_validator(mode="after")
    def _heads_split_hidden(self) -> Settings:
        if self.attention_blocks and self.hidden_dim % self.attention_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} does not split into {self.attention_heads} attention heads")
        return self

    @field_validator(
        "softmax", "sessionize_mode", "on_missing_raw", "training_launcher", "repeat_policy", "lr_schedule"
    )
    @classmethod
    def _one_of(cls, value: str, info: ValidationInfo) -> str:
        allowed = CHOICES[info.field_name]
        if value not in allowed:
            raise ValueError(f"must be one of {allowed}, got {value!r}")
        return value

    @field_validator("warehouse_url")
    @classmethod
    def _known_warehouse(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("duckdb://", "postgresql://")):
            raise ValueError(f"unknown warehouse URL scheme in {redact(value)!r}: use duckdb:///path or postgresql://")
        return value

    # --- lake layout: one place that names every folder ---
    @property
    def raw_events_dir(self) -> Path:
        return self.lake_dir / "raw" / "events"

    def raw_events_day_dir(self, day: dt.date) -> Path:
        """One arrival day of raw events; a producer commits it whole, so once it exists it has landed."""
        return self.raw_events_dir / f"dt={day.isoformat()}"

    @property
    def items_dir(self) -> Path:
        return self.lake_dir / "items"

    @property
    def sessionized_root(self) -> Path:
        return self.lake_dir / "sessionized"

    def sessionized_dir(self, ds: dt.date) -> Path:
        """What sessionize made of a day, committed as ONE unit: sequences/, vocab/, state/ and manifest.json.

        A crash can therefore never leave a day's new sequences beside its old vocabulary: readers find the
        previous complete day or the new complete one.
        """
        return self.sessionized_root / f"ds={ds.isoformat()}"

    def sequences_dir(self, ds: dt.date) -> Path:
        return self.sessionized_dir(ds) / "sequences"

    def vocab_dir(self, ds: dt.date) -> Path:
        return self.sessionized_dir(ds) / "vocab"

    def day_item_counts_dir(self, ds: dt.date) -> Path:
        """Valid new events per item_id that arrived in raw dt=ds (every item, in the vocabulary or not)."""
        return self.sessionized_dir(ds) / "day_item_counts"

    @property
    def quarantine_root(self) -> Path:
        """Rejected raw lines, partitioned like the raw events: quarantine/events/dt=D/."""
        return self.lake_dir / "quarantine" / "events"

    def quarantine_dir(self, day: dt.date) -> Path:
        return self.quarantine_root / f"dt={day.isoformat()}"

    def state_dir(self, ds: dt.date) -> Path:
        """Per-user state after ds (last L+1 events, older items), dedup keys and item counts."""
        return self.sessionized_dir(ds) / "state"

    def run_stats_root(self, step: str) -> Path:
        """The run-stats table of a Spark step (sessionize, recommend): one Parquet folder per ds, one row each."""
        return self.lake_dir / "run_stats" / step

    def run_stats_dir(self, step: str, ds: dt.date) -> Path:
        return self.run_stats_root(step) / f"ds={ds.isoformat()}"

    def checkpoint_dir(self, ds: dt.date) -> Path:
        """Training checkpoints of the ds's run (one per epoch); a killed run resumes from here."""
        return self.data_dir / "checkpoints" / f"train-ds={ds.isoformat()}"

    def recommendations_dir(self, ds: dt.date) -> Path:
        return self.lake_dir / "recommendations" / f"ds={ds.isoformat()}"

    @property
    def num_event_types(self) -> int:
        """Event-type vocabulary size: 0 = padding, then the configured types in order."""
        return len(self.event_types) + 1

    def als_params(self):
        from model_lib.evaluation.baselines import AlsParams

        return AlsParams(self.als_rank, self.als_reg_param, self.als_alpha, self.als_max_iter, self.seed)

    @property
    def stored_events(self) -> int:
        """Events per user in the sequence files and the sessionize state: the history, at least the model's window."""
        return max(self.seq_len, self.history_len)

    @property
    def stride(self) -> int:
        return self.window_stride or self.seq_len

    def repeat_rule(self):
        """The repeat policy as the metrics module and the recommender apply it (event types as 1-based indices)."""
        from model_lib.evaluation.metrics import RepeatPolicy

        types = tuple(self.event_types.index(kind) + 1 for kind in self.repeatable_event_types)
        return RepeatPolicy(self.repeat_policy, types)

    def uses_sampled_softmax(self, num_items: int) -> bool:
        return self.softmax == "sampled" or (self.softmax == "auto" and num_items > self.sampled_softmax_min_items)

    @property
    def num_gap_buckets(self) -> int:
        """0 = padding, 1 = first event of a user, 2.. = log2-scaled gap seconds up to max_gap_bucket."""
        return self.max_gap_bucket + 1


def get_settings(**overrides) -> Settings:
    """A fresh settings object: defaults, then RECO_* environment variables, then explicit overrides."""
    return Settings(**overrides)


def parse_ds(value: str | dt.date) -> dt.date:
    """A ds is parsed as a calendar date before it reaches any path or query."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError("expected YYYY-MM-DD")
        return dt.date.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"bad ds {value!r}: {error}") from None


def check_identifier(name: str) -> str:
    """SQL identifiers come from configuration; only plain identifiers may reach a query."""
    if not PLAIN_IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return name
