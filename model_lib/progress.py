"""One line per stage with its counts and seconds, so long work shows progress in a terminal or a task log."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _emit(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def stage(name: str) -> Iterator[Callable[..., None]]:
    """`with stage("train") as report: ...; report(users=10)` prints start and end lines with the counts."""
    counts: dict[str, object] = {}
    _emit(f"[reco] {name} ...")
    started = time.perf_counter()
    try:
        yield counts.update
    except BaseException:
        _emit(f"[reco] {name} FAILED after {time.perf_counter() - started:.1f}s")
        raise
    details = " ".join(f"{key}={_fmt(value)}" for key, value in counts.items())
    _emit(f"[reco] {name} done in {time.perf_counter() - started:.1f}s {details}".rstrip())


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
