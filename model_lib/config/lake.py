"""Where the data lives: the one place that names every folder of the lake (LakeSettings, a group of the settings)
and the parts of a sessionized day (SessionizedDay)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from model_lib.config.checks import NonNegativeInt

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SessionizedDay:
    """The parts of one sessionized day under `root`: the committed `ds=D` folder, or a pinned copy of it
    (storage.lake.pinned, which links READ_PARTS: what the training, the gate and the nightly run read)."""

    root: Path
    READ_PARTS: ClassVar[tuple[str, ...]] = ("sequences", "vocab", "day_item_counts")

    @property
    def sequences(self) -> Path:
        return self.root / "sequences"

    @property
    def vocab(self) -> Path:
        return self.root / "vocab"

    @property
    def day_item_counts(self) -> Path:
        return self.root / "day_item_counts"


class LakeSettings(BaseModel):
    """Where the data lives (embedded defaults under one project-local folder), and the one place that names every
    folder of the lake."""

    # The root of the lake, the warehouse file, the MLflow store, checkpoints and Airflow's home.
    data_dir: Path = PROJECT_ROOT / "data"
    lake_dir: Path | None = None  # default: data_dir/lake
    # Retention (jobs/retain.py, the nightly DAG's `retain` task): the newest days kept of each kind of derived data,
    # 0 = all. The raw events are the source of truth: kept unless keep_raw_days says otherwise. Never removed: the
    # newest committed day of a kind, the day before the night being run (its state continues tonight), and the
    # sessionized day of every model version that holds an alias.
    keep_sessionized_days: NonNegativeInt = 7
    keep_quarantine_days: NonNegativeInt = 90  # rejected lines (lake/quarantine)
    keep_nightly_days: NonNegativeInt = 30  # the nightly tables in the lake (lake/nightly)
    keep_warehouse_days: NonNegativeInt = 400  # days of the warehouse's nightly tables
    keep_raw_days: NonNegativeInt = 0  # raw event days (0: the source of truth stays)

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
        return SessionizedDay(self.sessionized_dir(ds)).sequences

    def vocab_dir(self, ds: dt.date) -> Path:
        return SessionizedDay(self.sessionized_dir(ds)).vocab

    def day_item_counts_dir(self, ds: dt.date) -> Path:
        """Valid new events per item_id that arrived in raw dt=ds (every item, in the vocabulary or not)."""
        return SessionizedDay(self.sessionized_dir(ds)).day_item_counts

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

    @property
    def nightly_root(self) -> Path:
        return self.lake_dir / "nightly"

    def nightly_dir(self, ds: dt.date) -> Path:
        """The night's tables of a day, committed as ONE unit (lake/nightly/ds=D/<table>/): a re-run that dies half
        way leaves the previous night whole, never new extra tables beside old recommendations."""
        return self.nightly_root / f"ds={ds.isoformat()}"

    def nightly_table_dir(self, table: str, ds: dt.date) -> Path:
        """One day of a nightly table (contracts.NIGHTLY_TABLES) as the recommend job wrote it."""
        return self.nightly_dir(ds) / table

    def recommendations_dir(self, ds: dt.date) -> Path:
        return self.nightly_table_dir("recommendations", ds)
