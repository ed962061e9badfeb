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

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECO_", extra="ignore")

    # --- where things live (embedded defaults under one project-local folder) ---
    data_dir: Path = PROJECT_ROOT / "data"
    lake_dir: Path | None = None
    warehouse_url: str | None = None  # duckdb:///abs/path.duckdb
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: Path | None = None
    airflow_home: Path | None = None

    # --- engines ---
    spark_master: str = "local[2]"
    spark_driver_memory: str = "4g"
    spark_shuffle_partitions: int = 8

    # --- raw-event contract and sessionization ---
    event_types: list[str] = Field(default_factory=lambda: ["view", "click", "add_to_cart", "purchase", "like", "rate"])
    session_gap_minutes: int = 30
    seq_len: int = 50
    min_item_count: int = 5
    max_gap_bucket: int = 20

    # --- model and training ---
    model_name: str = "reco-lstm-attention"
    embedding_dim: int = 64
    hidden_dim: int = 64
    lstm_layers: int = 1
    dropout: float = 0.1
    learning_rate: float = 2e-3
    # Small batches: on ML-1M the model needs many updates to leave the most-popular plateau (~4 epochs).
    batch_size: int = 64
    epochs: int = 10
    patience: int = 3
    seed: int = 42
    eval_k: int = 10
    promote_margin: float = 0.0
    xla: bool = True  # XLA-compiles the train step (the LSTM loop runs much faster on CPU)

    # --- serving ---
    top_k: int = 20

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

    @field_validator("top_k", "seq_len", "epochs", "batch_size", "embedding_dim", "hidden_dim", "min_item_count")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be a positive integer, got {value}")
        return value

    @field_validator("warehouse_url")
    @classmethod
    def _known_warehouse(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("duckdb://", "postgresql://")):
            raise ValueError(f"unknown warehouse URL scheme in {value!r}: use duckdb:///path or postgresql://")
        return value

    # --- lake layout: one place that names every folder ---
    @property
    def raw_events_dir(self) -> Path:
        return self.lake_dir / "raw" / "events"

    @property
    def items_dir(self) -> Path:
        return self.lake_dir / "items"

    def sequences_dir(self, ds: dt.date) -> Path:
        return self.lake_dir / "sequences" / f"ds={ds.isoformat()}"

    def vocab_dir(self, ds: dt.date) -> Path:
        return self.lake_dir / "vocab" / f"ds={ds.isoformat()}"

    def quarantine_dir(self, ds: dt.date) -> Path:
        return self.lake_dir / "quarantine" / "events" / f"ds={ds.isoformat()}"

    def sessionize_stats_path(self, ds: dt.date) -> Path:
        return self.lake_dir / "run_stats" / "sessionize" / f"ds={ds.isoformat()}.json"

    def recommendations_dir(self, ds: dt.date) -> Path:
        return self.lake_dir / "recommendations" / f"ds={ds.isoformat()}"

    @property
    def num_event_types(self) -> int:
        """Event-type vocabulary size: 0 = padding, then the configured types in order."""
        return len(self.event_types) + 1

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
