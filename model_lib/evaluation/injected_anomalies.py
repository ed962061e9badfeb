"""How well the anomaly score (serving/anomalies.py) finds days that are not the user's own, on a hold-out with
injected anomalies, against a simple baseline.

Injection (seeded): among the test hold-out's users with at least `day_events + 2` events, `share` of them get their
last `day_events` events replaced:
    hijack   by the last `day_events` events of another user (an account following someone else's taste)
    burst    by items drawn uniformly from the catalogue (a scraper, a bot)
half each. The last `day_events` events of every user are "the day".
Scores: the model's mean -ln P(event | before) over the day (the nightly score), and the baseline's mean
-ln(popularity share) of the day's items in the training data (rare items are surprising).
Metrics: ROC AUC (metrics.roc_auc) of each score for injected vs not, overall and per kind, and precision@n
(n = the number injected): the share of injected users among the n highest scores.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model_lib.contracts import FIRST_ITEM_INDEX, model_inputs
from model_lib.data.splits import Split
from model_lib.evaluation.metrics import roc_auc

KINDS = ("hijack", "burst")


def inject(items: np.ndarray, eligible: np.ndarray, share: float, day_events: int, num_items: int, seed: int):
    """-> (items with the injected days, kind per user: '' for untouched, 'hijack' or 'burst')."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, max(2, round(share * len(eligible))), replace=False)
    kinds = np.full(len(items), "", dtype=object)
    kinds[chosen[: len(chosen) // 2]], kinds[chosen[len(chosen) // 2 :]] = KINDS
    injected = items.copy()
    others = np.setdiff1d(eligible, chosen)
    for user in chosen[: len(chosen) // 2]:
        injected[user, -day_events:] = items[rng.choice(others), -day_events:]
    bursts = chosen[len(chosen) // 2 :]
    injected[bursts, -day_events:] = rng.integers(FIRST_ITEM_INDEX, num_items, (len(bursts), day_events))
    return injected, kinds


def popularity_surprise(train_items: np.ndarray, items: np.ndarray, day: np.ndarray, num_items: int) -> np.ndarray:
    """Mean -ln(share of the training events) of each user's known items of the day (add-one smoothed)."""
    counts = np.bincount(train_items[train_items >= FIRST_ITEM_INDEX], minlength=num_items).astype(np.float64) + 1
    surprise = -np.log(counts / counts.sum())
    known = day & (items >= FIRST_ITEM_INDEX)
    return np.where(known, surprise[items], 0.0).sum(axis=1) / np.maximum(known.sum(axis=1), 1)


def scores_report(scores: np.ndarray, kinds: np.ndarray) -> dict[str, float]:
    truth = kinds != ""
    top = np.argsort(-scores, kind="stable")[: truth.sum()]
    report = {"roc_auc": roc_auc(scores, truth), "precision_at_n": float(truth[top].mean())}
    for kind in KINDS:
        report[f"roc_auc_{kind}"] = roc_auc(scores[(kinds == kind) | ~truth], truth[(kinds == kind) | ~truth])
    return report


def compare(day_surprise: Callable, split: Split, num_items: int, share=0.05, day_events=3, seed=0) -> dict:
    """The model's day score and the popularity baseline on the test hold-out with injected days.

    `day_surprise(inputs, day)`: the model's DaySurprise of the users' `day` (serving.anomalies.day_surprise with the
    model's scorer), passed in so that judging a model never needs the model's code."""
    test = split.test.inputs
    eligible = np.flatnonzero(test.lengths >= day_events + 2)
    items, kinds = inject(test.items, eligible, share, day_events, num_items, seed)
    items, kinds = items[eligible], kinds[eligible]
    inputs = model_inputs(items, test.event_types[eligible], test.gaps[eligible])
    day = np.zeros(items.shape, bool)
    day[:, -day_events:] = True
    surprise = day_surprise(inputs, day)
    model_scores = np.zeros(len(items))  # a user whose day holds no known item is not surprising
    model_scores[surprise.users] = surprise.score
    baseline = popularity_surprise(split.train.items.ravel(), items, day, num_items)
    return {
        "users": int(len(items)),
        "injected": {kind: int((kinds == kind).sum()) for kind in KINDS},
        "day_events": day_events,
        "model": scores_report(model_scores, kinds),
        "item popularity": scores_report(baseline, kinds),
    }
