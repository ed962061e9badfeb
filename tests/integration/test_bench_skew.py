"""bench/skew.py run small: both variants' nights, the bot named every night, and the summary's ratios computed from
the recorded lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers.processes import run_ok

RECO = str(Path(sys.executable).parent / "reco")
pytestmark = pytest.mark.spark


def test_bench_skew_prints_each_night_and_the_ratios_of_one_user_against_many(tmp_path):
    import os

    results = tmp_path / "skew.jsonl"
    command = [RECO, "bench", "skew", "--events", "3000", "--nights", "2", "--users", "50"]
    stdout, _ = run_ok([*command, "--root", str(tmp_path / "b"), "--results", str(results)], dict(os.environ))
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    nights = [line for line in lines if "variant" in line]
    assert [(n["variant"], n["night"]) for n in nights] == [("skewed", 1), ("skewed", 2), ("spread", 1), ("spread", 2)]
    assert all(n["valid"] == 3000 and n["jvm_peak_rss_mib"] > 0 for n in nights)
    summary = lines[-1]
    assert summary["summary"] and summary["nights"] == {"skewed": 2, "spread": 2}
    walls = {v: sorted(n["wall_seconds"] for n in nights if n["variant"] == v) for v in ("skewed", "spread")}
    assert summary["wall_ratio_skewed_over_spread"] == pytest.approx(
        (sum(walls["skewed"]) / 2) / (sum(walls["spread"]) / 2), abs=0.01
    )
    assert len(summary["skewed_state_users_bytes_per_night"]) == 2
    assert len(results.read_text().splitlines()) == 5  # four nights and the summary, recorded
