"""The checks the settings' fields use (model_lib/config/groups.py): value types that validate themselves, and the
choices a field may take."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from model_lib.contracts import NIGHTLY_TABLES, RECOMMENDATIONS
from model_lib.redaction import redact

SESSIONIZE_MODES = ("auto", "full", "incremental")
SOFTMAX_MODES = ("auto", "full", "sampled")
MISSING_RAW_ACTIONS = ("skip", "fail")
LR_SCHEDULES = ("cosine", "constant")
TRAINING_LAUNCHERS = ("local", "kubernetes")
ENCODERS = ("lstm", "nextitnet", "svae")  # what reads the events in the network (model/network.py)
MAX_TOP_K = 500  # the nightly table and the DAG form allow up to this many recommendations per user


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {value}")
    return value


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def _share(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be between 0 and 1, got {value}")
    return value


def _warehouse_scheme(value: str | None) -> str | None:
    if value is not None and not value.startswith(("duckdb://", "postgresql://")):
        raise ValueError(f"unknown warehouse URL scheme in {redact(value)!r}: use duckdb:///path or postgresql://")
    return value


def _top_k_bound(value: int) -> int:
    if value > MAX_TOP_K:
        raise ValueError(f"top_k is at most {MAX_TOP_K}, got {value}")
    return value


Positive = Annotated[int, AfterValidator(_positive)]
NonNegativeInt = Annotated[int, AfterValidator(_non_negative)]
NonNegative = Annotated[float, AfterValidator(_non_negative)]
Share = Annotated[float, AfterValidator(_share)]


# The nightly tables that may be left out (recommendations are always written).
NIGHTLY_EXTRAS = tuple(table.name for table in NIGHTLY_TABLES if table is not RECOMMENDATIONS)


def _each_one_of(choices: tuple[str, ...]) -> AfterValidator:
    def check(values: list[str]) -> list[str]:
        unknown = sorted(set(values) - set(choices))
        if unknown:
            raise ValueError(f"each must be one of {choices}, got {unknown}")
        return values

    return AfterValidator(check)


def _one_of(choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {choices}, got {value!r}")
        return value

    return AfterValidator(check)
