"""Lake layout I/O: listing raw partitions, atomic folder commits, and reading the small tables back.

A folder is written under a temporary sibling name and then swapped in, so a reader (or a crash) sees the old
complete version or the new complete one, never a partial folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import gzip
import os
import re
import shutil
import socket
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd

# Only YYYY-MM-DD names a day: date.fromisoformat alone also takes `20240105` and `2024-W01-5` (Python 3.11), and a
# folder named so would reach Spark as text that no timestamp check can parse.
DAY_NAME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def folder_day(name: str, key: str) -> dt.date | None:
    """The day a `key=YYYY-MM-DD` folder name stands for; None for any other name."""
    value = name.removeprefix(f"{key}=")
    if value == name or not DAY_NAME.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:  # 2024-02-30
        return None


def dated_folders(root: Path, key: str, until: dt.date) -> list[tuple[dt.date, Path]]:
    """The `key=YYYY-MM-DD` folders under root with a date <= until, oldest first. Every reader lists days through
    this, so a folder whose name is not a day (misnamed_folders) is ignored the same way everywhere."""
    if not root.exists():
        return []
    for retired in root.glob(f".old-{key}=*"):  # a day whose commit crashed between two renames: finish it first
        recover_folder(root / retired.name.removeprefix(".old-").split(".", 1)[0])
    found = []
    for folder in root.glob(f"{key}=*"):
        day = folder_day(folder.name, key)
        if day is not None and day <= until and folder.is_dir():
            found.append((day, folder))
    return sorted(found)


def misnamed_folders(root: Path, key: str) -> list[str]:
    """The names of the `key=` folders under root that name no day (`dt=20240105`): ignored, and reported."""
    if not root.exists():
        return []
    return sorted(
        folder.name for folder in root.glob(f"{key}=*") if folder.is_dir() and folder_day(folder.name, key) is None
    )


def raw_partitions(raw_dir: Path, until: dt.date) -> list[Path]:
    """The raw `dt=YYYY-MM-DD` folders with dt <= until, oldest first."""
    return [folder for _, folder in dated_folders(raw_dir, "dt", until)]


def visible_files(folder: Path) -> list[Path]:
    """The files of a folder a Spark reader reads (it skips names starting with `.` or `_`), in name order."""
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith((".", "_")))


def unreadable_reason(path: Path) -> str | None:
    """Why a compressed raw file cannot be read to its end, or None. Spark's reader fails the whole job on a
    truncated `.gz` or one that is not gzip at all, so such a file is found before Spark opens it: decompressed
    once here, streaming (as fast as zlib, a few hundred MB of text a second; other names are never opened)."""
    if not path.name.endswith(".gz"):
        return None
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
        return f"{type(error).__name__}: {error}"
    return None


def latest_version_before(root: Path, ds: dt.date) -> Path | None:
    """The newest `ds=` version strictly before ds (e.g. the vocabulary a rebuild continues from)."""
    earlier = [folder for day, folder in dated_folders(root, "ds", ds) if day < ds]
    return earlier[-1] if earlier else None


def staging_path(final: Path) -> Path:
    """A unique temporary sibling of `final`, on the same file system so the commit is a rename.

    The name carries the host and process that writes it, so a later commit can tell a killed run's leftover
    (its process is gone) from a folder another live run is still writing.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.parent / f".tmp-{final.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def commit_folder(staged: Path, final: Path) -> None:
    """Swaps a fully written folder into place, then removes the previous version and dead runs' leftovers.

    On Linux the two names are exchanged in one step, so a reader finds the old complete version or the new one at
    every instant. Where the file system cannot exchange (NFS-like shared volumes), the new version first takes its
    staging name beside `final` and the previous one moves to `.old-` under the same tag, then the new one takes the
    name: a crash between those two renames leaves the pair, from which `recover_folder` (called by this function,
    the cleanup and the lake's readers) finishes the commit. No step removes the only complete copy.
    """
    recover_folder(final)
    if final.exists() and _exchange(staged, final):
        shutil.rmtree(staged)  # it now holds the previous version
    else:
        incoming = staging_path(final)
        staged.rename(incoming)
        retired = final.parent / incoming.name.replace(".tmp-", ".old-", 1)
        if final.exists():
            final.rename(retired)
        incoming.rename(final)
        shutil.rmtree(retired, ignore_errors=True)
    remove_dead_leftovers(final)


def write_file_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """`write(staged)` writes the file's content at a staging name beside `path` (staging_path: unique to this
    process, removed by remove_dead_leftovers like a staged folder); it is flushed to disk, then renamed over `path`
    in one step, so a reader or a crash sees the old file or the new one, never a part of it. Every single file the
    product writes for another process to read goes through here; folders go through commit_folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(path)
    staged = staging_path(path)
    try:
        write(staged)
        with open(staged, "rb") as written:
            os.fsync(written.fileno())
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path


def recover_folder(final: Path) -> bool:
    """Finishes a two-rename commit that crashed between its renames: `final` is missing, its previous version is at
    `.old-<name>.<tag>` and the complete new one at `.tmp-<name>.<tag>`, so the new one takes the name (without a new
    one, the previous one takes it back). Only commits of processes on this host that have ended; returns whether it
    recovered."""
    if final.exists() or not final.parent.is_dir():
        return False
    for retired in sorted(final.parent.glob(f".old-{final.name}.*")):
        tag = retired.name.removeprefix(f".old-{final.name}.")
        if not _dead_here(tag):
            continue
        incoming = final.parent / f".tmp-{final.name}.{tag}"
        (incoming if incoming.is_dir() else retired).rename(final)
        shutil.rmtree(retired, ignore_errors=True)
        return True
    return False


def recover_path(path: Path) -> None:
    """recover_folder for `path` and every folder above it that is missing (a reader of `ds=D/sequences` recovers
    the day `ds=D`, the unit its commit swapped)."""
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            recover_folder(folder)


def remove_dead_leftovers(final: Path) -> list[Path]:
    """Removes the staging (`.tmp-`), retired (`.old-`) and pinned (`.pin-`) siblings of `final` that processes on
    this host left when they were killed; folders of live processes, and of other hosts, stay. A crashed commit is
    finished first (recover_folder), so the only complete copy of a version is never among them. Returns what was
    removed."""
    recover_folder(final)
    removed = []
    for prefix in (".tmp-", ".old-", ".pin-"):
        for leftover in final.parent.glob(f"{prefix}{final.name}.*"):
            if _dead_here(leftover.name.removeprefix(f"{prefix}{final.name}.")):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


def _dead_here(tag: str) -> bool:
    """Whether a staging tag (host.pid.random, see staging_path) names a process of this host that has ended."""
    owner = tag.rsplit(".", 2)
    return (
        len(owner) == 3
        and owner[0] == socket.gethostname()
        and owner[1].isdigit()
        and not _process_alive(int(owner[1]))
    )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(first: Path, second: Path) -> bool:
    """Exchanges two existing names atomically (Linux renameat2 with RENAME_EXCHANGE); False where the C library
    or the file system cannot, so the caller falls back to renames."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(second))


@contextlib.contextmanager
def pinned(folder: Path, parts: tuple[str, ...]):
    """One committed version of `folder` (a day) for as long as the block runs: its `parts` (sub-folders)
    hard-linked into a private sibling `.pin-…`, which the block reads instead. Reading two parts one after the
    other could otherwise pair one version's vocabulary with the next version's sequences, when a commit (another
    DAG's run of the same day) swaps the day in between. The links cost no copy; a commit during the linking is
    seen (the day's folder is another one afterwards) and the pin taken again."""
    for _ in range(20):
        recover_path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"{folder} does not exist: run the step that writes it first")
        pin = folder.parent / staging_path(folder).name.replace(".tmp-", ".pin-", 1)
        opened = folder.stat().st_ino
        try:
            for part in parts:
                if (folder / part).is_dir():
                    link_files(folder / part, pin / part)
        except FileNotFoundError:  # a commit removed the version being linked
            shutil.rmtree(pin, ignore_errors=True)
            continue
        if folder.exists() and folder.stat().st_ino == opened:
            break
        shutil.rmtree(pin, ignore_errors=True)
    else:
        raise RuntimeError(f"{folder} was replaced 20 times while it was being pinned")
    try:
        yield pin
    finally:
        shutil.rmtree(pin, ignore_errors=True)


def link_files(source: Path, target: Path) -> int:
    """Hard-links the visible files of `source` into a new folder `target` (a copy where the file system cannot
    link, e.g. across devices); a later commit that replaces `source`'s day leaves `target`'s names intact.
    Returns the files linked."""
    target.mkdir(parents=True)
    files = visible_files(source)
    for path in files:
        try:
            os.link(path, target / path.name)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copy2(path, target / path.name)
    return len(files)


def parquet_files(folder: Path) -> list[Path]:
    """The data files of a Spark-written Parquet folder, in name order."""
    recover_path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder} does not exist: run the step that writes it first")
    return sorted(folder.glob("*.parquet"))


def parquet_rows(folder: Path) -> int:
    """The rows of a Spark-written Parquet folder, from the files' footers (no data is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in parquet_files(folder))


def read_parquet_folder(folder: Path) -> pd.DataFrame:
    recover_path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder} does not exist: run the step that writes it first")
    try:
        return pd.read_parquet(folder)
    except FileNotFoundError:
        # A commit swapped in a new version between listing the files and opening them; that version is complete.
        return pd.read_parquet(folder)


def write_run_stats(row: dict, final: Path) -> None:
    """One step's counts for one ds as a one-row Parquet table, stamped with when it finished; replaces a re-run's.

    The ds is the folder's partition value (`<step>/ds=D`), so it is not repeated inside the row.
    """
    staged = staging_path(final)
    staged.mkdir()
    stamped = {key: value for key, value in row.items() if key != "ds"}
    stamped["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    pd.DataFrame([stamped]).to_parquet(staged / "part-00000.parquet", index=False)
    commit_folder(staged, final)


def read_run_stats(folder: Path) -> dict | None:
    """The row `write_run_stats` wrote, or None when the step has not run for that ds."""
    if not folder.is_dir():
        return None
    return pd.read_parquet(folder).iloc[0].to_dict()
