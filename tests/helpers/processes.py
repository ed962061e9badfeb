"""Helpers for tests that run real processes: commands that must succeed, free loopback ports, servers that are
started here and stopped by their own PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def run_ok(command: list[str], env: dict[str, str], timeout: int = 900) -> tuple[str, str]:
    """Runs a command to success; returns (stdout, stdout + stderr)."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{output[-6000:]}"
    return done.stdout, output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")


def start_server(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Starts a long-running process in its own process group, output in `log`; stop it with `stop_server`."""
    handle = log.open("w")
    return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(process: subprocess.Popen) -> None:
    """Stops a server and the children it started (workers, task processes) through its PID's process group:
    TERM, up to 30 s for a clean exit, then KILL whatever of the group is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        time.sleep(1)  # children finish their own shutdown after the leader
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
