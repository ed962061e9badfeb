"""`reco bench sessionize` on two tiny histories with the same day: one JSON line per size, then the by-history line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers.processes import run_ok

RECO = str(Path(sys.executable).parent / "reco")


@pytest.mark.slow
def test_bench_sessionize_prints_the_ratios_for_histories_of_different_sizes_with_the_same_day(tmp_path):
    command = [RECO, "bench", "sessionize", "--events", "8000", "16000", "--day-events", "250"]
    recorded = tmp_path / "sessionize.jsonl"
    stdout, _ = run_ok([*command, "--root", str(tmp_path / "b"), "--results", str(recorded)], dict(os.environ))
    results = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    sizes, by_history = results[:-1], results[-1]
    assert [result["events"] for result in sizes] == [8000, 16000]
    for result in sizes:
        # The last day is cut to whole sessions worth about 250 lines whatever the history (a session of the
        # synthetic log has about 10), and read whole by the incremental run.
        assert 250 <= result["events_read_incremental_day"] < 250 + 60
        assert 0 < result["users_in_incremental_day"] < 60
        assert result["incremental_equals_full"] is True
        # The night wrote the touched users' state only, as a layer beside the rebuild's; compacting them into one
        # layer gives the same sequences.
        assert 0 < result["incremental_state_layer_rows"] < result["users"]
        assert result["incremental_state_rows_all_layers"] > result["users"]
        assert result["compacted_equals_incremental"] is True and result["spark_incremental_compacting_seconds"] > 0
        assert 0 < result["spark_floor_seconds"] < result["spark_full_seconds"]
        assert result["duckdb_agrees"] == {key: True for key in ("read", "quarantined", "valid", "duplicates", "users")}
        assert min(result["peak_rss_mib"].values()) > 0
    assert [json.loads(line)["events"] for line in recorded.read_text().splitlines()] == [8000, 16000]
    assert by_history["benchmark"] == "sessionize_incremental_by_history"
    assert set(by_history["incremental_seconds"]) == {"8,000", "16,000"}
    assert by_history["over_smallest_history"]["8,000"] == 1.0
