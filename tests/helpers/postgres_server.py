"""A real PostgreSQL server for tests: initdb in a temporary folder, `postgres` on a free 127.0.0.1 port, stopped
by its PID (fast shutdown) and deleted afterwards.

PostgreSQL refuses to run as root; as root the server runs as the `postgres` system user (setpriv execs in place,
so the PID we hold is the postmaster's own).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers.processes import free_port, run_ok, start_server, wait_for

USER = "reco"


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise FileNotFoundError(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: `apt-get install postgresql-15` "
            "(.ci/run does this when it can)"
        )
    return Path(found[-1]).parent


@contextmanager
def postgres_server(password: str | None = None) -> Iterator[str]:
    """Yields a connection URL `postgresql://reco@127.0.0.1:PORT/postgres` of a fresh server; with a password, the
    server requires it (scram-sha-256) and the URL carries it."""
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="reco-pg-"))
    as_server_user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_server_user = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups"]
    env = {"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"}
    port = free_port()
    process = None
    try:
        auth = ["--auth=trust"]
        if password:
            pwfile = folder / "pwfile"
            pwfile.write_text(password + "\n")
            if as_server_user:
                shutil.chown(pwfile, "postgres", "postgres")
            auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        run_ok(
            [*as_server_user, str(binaries / "initdb"), "-D", str(folder / "data"), "-U", USER]
            + [*auth, "--encoding=UTF8", "--no-sync"],
            env,
            timeout=120,
        )
        process = start_server(
            [*as_server_user, str(binaries / "postgres"), "-D", str(folder / "data")]
            + ["-h", "127.0.0.1", "-p", str(port), "-k", str(folder), "-c", "fsync=off"],
            env,
            folder / "server.log",
        )
        wait_for(
            lambda: subprocess.run(
                [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            ).returncode
            == 0,
            f"PostgreSQL on 127.0.0.1:{port}",
            timeout=60,
        )
        credentials = f"{USER}:{password}" if password else USER
        yield f"postgresql://{credentials}@127.0.0.1:{port}/postgres"
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: roll back open sessions, exit
            process.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server_url: str, name: str) -> str:
    """CREATE DATABASE name on the server -> its URL (one database per test keeps tests independent)."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"
