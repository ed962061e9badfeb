"""model_lib/storage/lake.py commits: a reader in another process never finds a committed folder missing or
partial while it is replaced over and over, and a commit clears what killed runs left behind, but not a live
run's folder."""

import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from model_lib.storage import lake

FILES = 20


def write_version(folder, version: int) -> None:
    folder.mkdir()
    for part in range(FILES):
        (folder / f"part-{part:05d}").write_text(str(version))


def watch(final, stop, report) -> None:
    """Opens `final` and reads the folder it opened as fast as it can; reports how often the name led nowhere or
    to a folder without exactly one complete version.

    The files are read relative to the opened folder: a reader that lists by name and then opens by name can
    straddle a commit whatever the commit does, so that is not what this measures.
    """
    looks = missing = mixed = 0
    while not stop.is_set():
        looks += 1
        try:
            folder = os.open(final, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            missing += 1
            continue
        try:
            names = os.listdir(folder)
            versions = set()
            for name in names:
                handle = os.open(name, os.O_RDONLY, dir_fd=folder)
                versions.add(os.read(handle, 64))
                os.close(handle)
            replaced = os.stat(final).st_ino != os.fstat(folder).st_ino
        except FileNotFoundError:  # a file of the opened version vanished: it was retired and is being removed
            continue
        finally:
            os.close(folder)
        if not replaced:  # a version replaced while it was read is being removed; only the current one is judged
            mixed += len(versions) != 1 or len(names) != FILES
    report.put((looks, missing, mixed))


def replace_while_watched(final, commits: int) -> tuple[int, int, int]:
    context = multiprocessing.get_context("spawn")
    stop, report = context.Event(), context.Queue()
    watcher = context.Process(target=watch, args=(final, stop, report))
    watcher.start()
    time.sleep(1.0)  # the watcher is importing; let it start looking
    for version in range(1, commits + 1):
        staged = lake.staging_path(final)
        write_version(staged, version)
        lake.commit_folder(staged, final)
    stop.set()
    counts = report.get(timeout=30)
    watcher.join(timeout=30)
    return counts


def test_a_reader_never_sees_a_folder_missing_or_partial_while_it_is_replaced(tmp_path):
    final = tmp_path / "ds=2024-01-01"
    write_version(final, 0)
    looks, missing, mixed = replace_while_watched(final, commits=400)
    print(f"400 commits, {looks} looks by the reader: {missing} missing, {mixed} partial")
    assert looks > 400, "the reader did not overlap the commits"
    assert (missing, mixed) == (0, 0)
    assert {path.read_text() for path in final.iterdir()} == {"400"}
    assert [path.name for path in final.parent.iterdir()] == [final.name], "a commit left a sibling behind"


def test_where_names_cannot_be_exchanged_the_two_rename_commit_still_ends_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "_exchange", lambda first, second: False)
    final = tmp_path / "ds=2024-01-01"
    write_version(final, 0)
    for version in (1, 2):
        staged = lake.staging_path(final)
        write_version(staged, version)
        lake.commit_folder(staged, final)
    assert {path.read_text() for path in final.iterdir()} == {"2"}
    assert [path.name for path in tmp_path.iterdir()] == [final.name]


def commit_and_crash_between_the_renames(staged, final) -> None:
    """commit_folder's two-rename fallback in a process that dies right after the first rename moved `final` away."""
    renames = []

    def rename_then_die(self, target):
        os.rename(self, target)
        renames.append(target)
        if Path(target).name.startswith(".old-"):
            os._exit(17)
        return Path(target)

    lake._exchange = lambda first, second: False
    Path.rename = rename_then_die
    lake.commit_folder(staged, final)


def crashed_commit(staged, final):
    """commit_and_crash_between_the_renames in a forked process, waited for; returns the ended process."""
    child = multiprocessing.get_context("fork").Process(
        target=commit_and_crash_between_the_renames, args=(staged, final)
    )
    child.start()
    child.join(timeout=60)
    return child


def test_a_crash_between_the_two_renames_loses_no_committed_version(tmp_path, monkeypatch):
    """Before: the day's name was missing until a re-run, whose cleanup then deleted both the `.old-` copy (the
    previous committed day) and the complete `.tmp-` copy. Now every reader, and the next commit, finish the crashed
    commit first."""
    import datetime as dt

    final = tmp_path / "ds=2024-01-01"
    write_version(final, 0)
    staged = lake.staging_path(final)
    write_version(staged, 1)
    child = crashed_commit(staged, final)
    assert child.exitcode == 17 and not final.exists(), "the crash did not come between the renames"
    assert sorted(path.name.split(".")[1][:4] for path in tmp_path.iterdir()) == ["old-", "tmp-"]

    # A reader listing the days finds the day, complete (the new version: its commit had begun).
    assert lake.dated_folders(tmp_path, "ds", dt.date.max) == [(dt.date(2024, 1, 1), final)]
    assert {path.read_text() for path in final.iterdir()} == {"1"}
    assert [path.name for path in tmp_path.iterdir()] == [final.name]

    # The same crash again, and this time the next commit (with a live process's folder beside) is the first to look.
    staged = lake.staging_path(final)
    write_version(staged, 2)
    child = crashed_commit(staged, final)
    assert child.exitcode == 17 and not final.exists()
    monkeypatch.setattr(lake, "_exchange", lambda first, second: False)
    staged = lake.staging_path(final)
    write_version(staged, 3)
    lake.commit_folder(staged, final)
    assert {path.read_text() for path in final.iterdir()} == {"3"}
    assert [path.name for path in tmp_path.iterdir()] == [final.name]


def test_a_reader_of_a_folder_inside_a_crashed_day_recovers_the_day(tmp_path):
    final = tmp_path / "ds=2024-01-01"
    final.mkdir()
    (final / "vocab").mkdir()
    staged = lake.staging_path(final)
    (staged / "vocab").mkdir(parents=True)
    import pandas as pd

    pd.DataFrame({"item_id": ["a", "b"]}).to_parquet(staged / "vocab" / "part-0.parquet")
    child = crashed_commit(staged, final)
    assert child.exitcode == 17 and not final.exists()
    assert lake.read_parquet_folder(final / "vocab")["item_id"].tolist() == ["a", "b"]


def finished_pid() -> int:
    """The PID of a process that has ended: what a killed run's folder names."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def named_for(final, pid: int):
    """The staging folder a process with that PID on this host would write for `final`."""
    return final.parent / lake.staging_path(final).name.replace(f".{os.getpid()}.", f".{pid}.")


def test_a_commit_removes_what_killed_runs_left_but_not_a_live_runs_folder(tmp_path):
    final = tmp_path / "ds=2024-01-02"
    dead, live = finished_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed_staging = named_for(final, dead)
        killed_retired = tmp_path / killed_staging.name.replace(".tmp-", ".old-")
        live_staging = named_for(final, live.pid)
        other_host = tmp_path / f".tmp-{final.name}.elsewhere.{dead}.0badc0de"
        other_day = named_for(tmp_path / "ds=2024-01-03", dead)
        for leftover in (killed_staging, killed_retired, live_staging, other_host, other_day):
            write_version(leftover, -1)
        staged = lake.staging_path(final)
        write_version(staged, 1)
        lake.commit_folder(staged, final)
        assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
            [final.name, live_staging.name, other_host.name, other_day.name]
        )
    finally:
        live.kill()
        live.wait()


def test_linked_layer_files_outlive_the_day_they_came_from_and_its_replacement(tmp_path):
    """A day's state links the earlier layers' files from yesterday's folder: replacing or deleting yesterday (a
    re-run, a retention sweep) must leave today's files whole."""
    yesterday = tmp_path / "ds=1" / "users" / "layer=1"
    yesterday.mkdir(parents=True)
    (yesterday / "part-0.parquet").write_bytes(b"rows of night 1")
    (yesterday / "_SUCCESS").write_bytes(b"")
    (yesterday / ".part-0.parquet.crc").write_bytes(b"crc")
    today = tmp_path / "ds=2" / "users" / "layer=1"
    assert lake.link_files(yesterday, today) == 1  # the data file; markers and checksums stay behind
    assert sorted(path.name for path in today.iterdir()) == ["part-0.parquet"]
    assert (today / "part-0.parquet").stat().st_ino == (yesterday / "part-0.parquet").stat().st_ino  # no copy
    replacement = tmp_path / "staged"
    (replacement / "users" / "layer=1").mkdir(parents=True)
    (replacement / "users" / "layer=1" / "part-0.parquet").write_bytes(b"a re-run of night 1")
    lake.commit_folder(replacement, tmp_path / "ds=1")
    assert (today / "part-0.parquet").read_bytes() == b"rows of night 1"
    shutil.rmtree(tmp_path / "ds=1")
    assert (today / "part-0.parquet").read_bytes() == b"rows of night 1"


def test_spark_reads_a_folder_it_wrote_with_the_recorded_schema_and_no_inference_job(spark, tmp_path):
    import datetime as dt

    import pandas as pd
    import pyarrow.parquet as pq

    from model_lib.storage.spark import SPARK_SCHEMA_KEY, read_parquet

    written = spark.createDataFrame(
        [("u1", [3, 4], dt.datetime(2024, 1, 2, 3, 4, 5)), ("u2", [], None)],
        "user_id string, item_indices array<int>, last_event_ts timestamp",
    )
    written.write.parquet(str(tmp_path / "by-spark"))
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("read", "read_parquet", interruptOnCancel=False)
    frame = read_parquet(spark, tmp_path / "by-spark")
    jobs_while_reading = list(tracker.getJobIdsForGroup("read"))
    spark.sparkContext.setJobGroup("rest", "rest", interruptOnCancel=False)
    assert jobs_while_reading == []  # Spark's own inference would have run a job here
    assert frame.schema == written.schema == spark.read.parquet(str(tmp_path / "by-spark")).schema
    assert sorted(map(tuple, frame.collect())) == sorted(map(tuple, written.collect()))

    # Files without Spark's footer entry (pandas wrote them) are inferred as usual.
    (tmp_path / "by-pandas").mkdir()
    pd.DataFrame({"user_id": ["u3"], "length": [2]}).to_parquet(tmp_path / "by-pandas" / "part-0.parquet")
    assert SPARK_SCHEMA_KEY not in (pq.read_schema(tmp_path / "by-pandas" / "part-0.parquet").metadata or {})
    assert read_parquet(spark, tmp_path / "by-pandas").collect()[0].asDict() == {"user_id": "u3", "length": 2}


def test_only_yyyy_mm_dd_names_a_day_and_every_other_dt_folder_is_reported(tmp_path):
    import datetime as dt

    for name in ("dt=2024-01-02", "dt=20240101", "dt=2024-W01-5", "dt=2024-02-30", "dt=garbage", "ds=2024-01-03"):
        (tmp_path / name).mkdir()
    assert lake.dated_folders(tmp_path, "dt", dt.date.max) == [(dt.date(2024, 1, 2), tmp_path / "dt=2024-01-02")]
    assert lake.misnamed_folders(tmp_path, "dt") == ["dt=2024-02-30", "dt=2024-W01-5", "dt=20240101", "dt=garbage"]
    assert (
        lake.folder_day("ds=2024-01-03", "ds") == dt.date(2024, 1, 3) and lake.folder_day("ds=2024-01-03", "dt") is None
    )


def write_day(final, version: int) -> None:
    for part in ("sequences", "vocab"):
        (final / part).mkdir(parents=True)
        (final / part / "part-0.parquet").write_text(f"{part} {version}")


def pinned_versions(pin) -> set[str]:
    return {path.read_text().split()[1] for path in pin.glob("*/part-0.parquet")}


def test_a_pinned_day_reads_one_version_whatever_commits_meanwhile(tmp_path, monkeypatch):
    """recommend read the vocabulary, then minutes later the sequences: a commit in between (the weekly training
    re-sessionizing the same day) paired one version's vocabulary with another's sequences."""
    final = tmp_path / "ds=2024-01-01"
    write_day(final, 1)
    with lake.pinned(final, ("sequences", "vocab", "day_item_counts")) as pin:
        staged = lake.staging_path(final)
        write_day(staged, 2)
        lake.commit_folder(staged, final)
        assert pinned_versions(pin) == {"1"} and pinned_versions(final) == {"2"}
    assert not pin.exists() and [path.name for path in tmp_path.iterdir()] == [final.name]

    # A commit while the pin is being linked: the pin is taken again, of the new version only.
    linked, link = [], lake.link_files

    def commit_after_the_first_part(source, target):
        count = link(source, target)
        linked.append(source)
        if len(linked) == 1:
            staged = lake.staging_path(final)
            write_day(staged, 3)
            lake.commit_folder(staged, final)
        return count

    monkeypatch.setattr(lake, "link_files", commit_after_the_first_part)
    with lake.pinned(final, ("sequences", "vocab")) as pin:
        assert pinned_versions(pin) == {"3"} and len(linked) == 4


def test_a_file_is_written_whole_or_not_at_all_and_a_dead_writers_part_is_removed(tmp_path):
    path = tmp_path / "tuned" / "best.json"
    lake.write_file_atomically(path, lambda staged: staged.write_text("old"))
    left_by_a_killed_writer = named_for(path, finished_pid())
    left_by_a_killed_writer.write_text("half")

    def failing(staged):
        staged.write_text("new but cut")
        raise OSError("disk full")

    try:
        lake.write_file_atomically(path, failing)
    except OSError:
        pass
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.json"]  # neither part is left behind
    lake.write_file_atomically(path, lambda staged: staged.write_text("new"))
    assert path.read_text() == "new"
