"""The one logging path: every line the product writes about its own work goes through the `reco` logger, to
standard error, as `[reco] message` (what the demo greps and what task logs show), one line per stage with its
counts and seconds so long work shows progress in a terminal or a task log.

Command output meant for the user (a list printed by `reco show`, the environment `runtime env` prints for a
shell) is not logging and stays on standard output.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOGGER = logging.getLogger("reco")


class _StandardError(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (a test or a task runner may replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


if not LOGGER.handlers:
    _handler = _StandardError()
    _handler.setFormatter(logging.Formatter("[reco] %(message)s"))
    LOGGER.addHandler(_handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False  # a host's logging configuration (Airflow's) would print the line a second time


def say(message: str) -> None:
    """One `[reco]` line (or several, for a message with line breaks)."""
    LOGGER.disabled = False  # a logging configuration applied later (dictConfig) may have switched it off
    LOGGER.info(message)


@contextmanager
def stage(name: str) -> Iterator[Callable[..., None]]:
    """`with stage("train") as report: ...; report(users=10)` logs start and end lines with the counts."""
    counts: dict[str, object] = {}
    say(f"{name} ...")
    started = time.perf_counter()
    try:
        yield counts.update
    except BaseException:
        say(f"{name} FAILED after {time.perf_counter() - started:.1f}s")
        raise
    details = " ".join(f"{key}={_fmt(value)}" for key, value in counts.items())
    say(f"{name} done in {time.perf_counter() - started:.1f}s {details}".rstrip())


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
