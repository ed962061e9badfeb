"""The one configuration object of the platform, in groups by concern.

`Settings` is made of eight groups, one per part of the pipeline that reads them:

    lake           where the data lives and how the lake names its folders
    engines        Spark, the warehouse, MLflow and Airflow: addresses and resources
    sessionize     the raw-event contract and the sequences it becomes
    model          the network: its shape, its loss and how it is compiled
    training       the budget, optimizer, schedule, early stopping and the training run's baselines
    gate           the floors a model must clear to be promoted or served
    serving        what the nightly run recommends, and the repeat policy every metric shares
    orchestration  how the DAGs wait for data and where training runs

Code reads a value through its group (`settings.sessionize.seq_len`) and a function that needs one group takes that
group, not the whole object. Every field keeps its flat environment variable: RECO_<FIELD> (RECO_SEQ_LEN=100,
RECO_WAREHOUSE_URL=duckdb:///tmp/w.duckdb, RECO_EVENT_TYPES='["view", "buy"]'), and `get_settings(seq_len=100)`
takes flat names too, so field names are unique across groups. Jobs, DAGs, tests and benchmarks all call
`get_settings()`; nothing else hard-codes a path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import typing
from typing import Any

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from model_lib.config.checks import MAX_TOP_K, SESSIONIZE_MODES
from model_lib.config.groups import (
    GROUP_OF_FIELD,
    GROUPS,
    EngineSettings,
    GateSettings,
    ModelSettings,
    OrchestrationSettings,
    ServingSettings,
    SessionizeSettings,
    TrainingSettings,
)
from model_lib.config.lake import PROJECT_ROOT, LakeSettings, SessionizedDay
from model_lib.ranking import REPEAT_POLICIES

__all__ = [
    "GROUP_OF_FIELD",
    "GROUPS",
    "MAX_TOP_K",
    "PROJECT_ROOT",
    "REPEAT_POLICIES",
    "SESSIONIZE_MODES",
    "EngineSettings",
    "FlatEnvironment",
    "GateSettings",
    "LakeSettings",
    "ModelSettings",
    "OrchestrationSettings",
    "ServingSettings",
    "SessionizedDay",
    "SessionizeSettings",
    "Settings",
    "TrainingSettings",
    "check_identifier",
    "get_settings",
    "parse_ds",
]
ENV_PREFIX = "RECO_"
PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class FlatEnvironment(PydanticBaseSettingsSource):
    """RECO_<FIELD> for every field of every group (the names from before the groups, one flat namespace).

    Matched case-insensitively like pydantic-settings' own source; an empty variable (a template that rendered
    nothing) means "not set"; list values are JSON (RECO_EVENT_TYPES='["view", "buy"]').
    """

    def get_field_value(self, field, field_name):  # the whole mapping is built in __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environment = {name.upper(): value for name, value in os.environ.items()}
        values: dict[str, dict[str, Any]] = {}
        for field, group in GROUP_OF_FIELD.items():
            name = f"{ENV_PREFIX}{field.upper()}"
            text = environment.get(name, "")
            if text == "":
                continue
            annotation = GROUPS[group].model_fields[field].annotation
            if typing.get_origin(annotation) in (list, dict):
                try:
                    text = json.loads(text)
                except json.JSONDecodeError as error:
                    raise SettingsError(f'{name} must be JSON (for example \'["view", "buy"]\'): {error}') from None
            values.setdefault(group, {})[field] = text
        return values


class Settings(BaseSettings):
    """Defaults, then RECO_* environment variables, then explicit values; see the module docstring for the groups."""

    model_config = SettingsConfigDict(extra="ignore")

    lake: LakeSettings = Field(default_factory=LakeSettings)
    engines: EngineSettings = Field(default_factory=EngineSettings)
    sessionize: SessionizeSettings = Field(default_factory=SessionizeSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        return init_settings, FlatEnvironment(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _flat_names_into_groups(cls, data: Any) -> Any:
        """Flat names (get_settings(seq_len=5)) go into their group; they come from the caller, so they win over
        the environment's values of the same field."""
        if not isinstance(data, dict):
            return data
        grouped = {key: value for key, value in data.items() if key not in GROUP_OF_FIELD}
        for key, value in data.items():
            if key in GROUP_OF_FIELD:
                group = GROUP_OF_FIELD[key]
                current = grouped.get(group, {})
                current = current.model_dump(exclude_unset=True) if isinstance(current, BaseModel) else dict(current)
                grouped[group] = {**current, key: value}
        return grouped

    @model_validator(mode="after")
    def _fill_derived_paths(self) -> Settings:
        lake, engines = self.lake, self.engines
        lake.data_dir = lake.data_dir.resolve()
        if lake.lake_dir is None:
            lake.lake_dir = lake.data_dir / "lake"
        if engines.warehouse_url is None:
            engines.warehouse_url = f"duckdb:///{lake.data_dir / 'warehouse' / 'reco.duckdb'}"
        if engines.mlflow_tracking_uri is None:
            engines.mlflow_tracking_uri = f"sqlite:///{lake.data_dir / 'mlflow' / 'mlflow.db'}"
        if engines.mlflow_artifact_root is None:
            engines.mlflow_artifact_root = lake.data_dir / "mlflow" / "artifacts"
        if engines.airflow_home is None:
            engines.airflow_home = lake.data_dir / "airflow"
        return self

    @model_validator(mode="after")
    def _repeatable_types_known(self) -> Settings:
        unknown = sorted(set(self.serving.repeatable_event_types) - set(self.sessionize.event_types))
        if unknown:
            raise ValueError(
                f"repeatable_event_types {unknown} are not among the event types {self.sessionize.event_types}"
            )
        return self

    # --- values derived from more than one group ---
    @property
    def stride(self) -> int:
        """Training windows over a long history start this many events apart (training.window_stride, else L)."""
        return self.training.window_stride or self.sessionize.seq_len

    def repeat_rule(self):
        """The repeat policy as the metrics module and the recommender apply it (event types as 1-based indices)."""
        from model_lib.ranking import RepeatPolicy

        types = tuple(self.sessionize.event_types.index(kind) + 1 for kind in self.serving.repeatable_event_types)
        return RepeatPolicy(self.serving.repeat_policy, types)

    # --- the flat view: environment names, MLflow params, `reco settings` ---
    def flat(self) -> dict[str, Any]:
        """Every field under its flat name (the RECO_<FIELD> name without the prefix)."""
        return {field: getattr(getattr(self, group), field) for field, group in GROUP_OF_FIELD.items()}

    def pick(self, names) -> dict[str, Any]:
        """The fields `names` (flat names), in that order."""
        flat = self.flat()
        return {name: flat[name] for name in names}

    def explicit_fields(self) -> set[str]:
        """Flat names of the fields given by the environment or the caller (not left at their default)."""
        return {field for group in GROUPS for field in getattr(self, group).model_fields_set}

    def updated(self, **changes: Any) -> Settings:
        """A validated copy with some fields (flat names) changed; the environment is not read again."""
        unknown = sorted(set(changes) - set(GROUP_OF_FIELD))
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        return Settings.model_validate({**self.flat(), **changes})


def get_settings(**overrides) -> Settings:
    """A fresh settings object: defaults, then RECO_* environment variables, then explicit overrides (flat names)."""
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
