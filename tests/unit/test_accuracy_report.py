"""The accuracy benchmark's verdict and the page rendered from its results file (bench/accuracy.py)."""

import json

import numpy as np

from bench.accuracy import verdict
from bench.accuracy_report import render


def scorer(ndcg: float) -> dict:
    return {
        "ndcg_10": ndcg,
        "ndcg_10_stderr": 0.01,
        "hr_10": 2 * ndcg,
        "mrr_10": ndcg / 2,
        "hr_20": 2.5 * ndcg,
        "ndcg_20": 1.1 * ndcg,
        "coverage_20": 0.5,
    }


def test_the_verdict_needs_both_the_ratio_and_a_paired_gain_beyond_its_error():
    rng = np.random.default_rng(1)
    knn = rng.integers(1, 40, 400).astype(float)
    clearly_better = np.maximum(knn - 3, 1)
    scorers = {"model": scorer(0.30), "item_knn": scorer(0.25), "popular": scorer(0.05)}
    ranks = {"model": clearly_better, "item_knn": knn, "popular": knn + 20}
    won = verdict(scorers, ranks)
    assert won["best_baseline"] == "item_knn" and won["ratio"] == 1.2 and won["wins"]
    assert won["paired_difference"] > won["paired_stderr"] > 0
    # 1.05x the best baseline: no win, whatever the paired test says.
    assert not verdict({**scorers, "model": scorer(0.2625)}, ranks)["wins"]
    # The ratio, but the same users' ranks: no gain beyond the noise, no win.
    assert not verdict(scorers, {**ranks, "model": knn})["wins"]


def test_the_page_shows_each_data_sets_latest_defaults_run_and_lists_experiments_apart(tmp_path):
    def line(dataset, model_ndcg, overrides=()):
        scorers = {"model": scorer(model_ndcg), "item_knn": scorer(0.1), "popular": scorer(0.02)}
        return {
            "dataset": dataset,
            "users": 300,
            "items": 900,
            "events": 90000,
            "policy": "exclude_seen",
            "validation_repeat_share": 0.0,
            "overrides": list(overrides),
            "hyper_parameters": {"dropout": 0.3},
            "rule": {
                "best_baseline": "item_knn",
                "ratio": model_ndcg / 0.1,
                "paired_difference": 0.01,
                "paired_stderr": 0.004,
                "wins": model_ndcg >= 0.11,
            },
            "chosen": {"transition_gate_mean": 0.4, "stopped": "early (patience)"},
            "train_seconds": 100.0,
            "updates": 500,
            "best_round": 7,
            "validation_rounds": 12,
            "validation_ndcg_10_per_round": [0.05, 0.09],
            **scorers,
        }

    results = tmp_path / "accuracy.jsonl"
    lines = [line("ml-100k", 0.09), line("ml-100k", 0.13), line("ml-100k", 0.2, ["dropout"])]
    results.write_text("".join(json.dumps(entry) + "\n" for entry in lines))
    reasons = tmp_path / "reasons.jsonl"
    figures = {"model_version": 3, "users": 200, "k": 10, "top_share": 0.61, "above_random": 0.9}
    reasons.write_text(json.dumps({**figures, "reasons_per_list": 4.2, "reason_cost": 0.03}) + "\n")
    page = render(results, tmp_path / "ACCURACY.md", reasons).read_text()
    assert "| 3 | 200 | 10 | 0.61 | 0.9 | 4.2 | 0.03 |" in page
    table = [row for row in page.splitlines() if row.startswith("| ml-100k |")]
    assert len(table) == 1 and "0.1300" in table[0] and "| yes |" in table[0]  # the latest defaults run only
    assert "0.0900" not in page
    experiments = page.split("## Runs with changed settings")[1]
    assert "dropout=0.3" in experiments and "0.2000" in experiments
