"""How surprising a user's day was under the model (DeepLog-style): the model predicts each event from the ones
before it, and a day of events it found unlikely is anomalous (a hijacked account following someone else's taste,
a burst of random items, a scraper).

For each event of the day that follows a real event in the user's window and is a known item:
    nll          = -ln P(the event's item | the events before it), P the model's full next-item distribution over
                   the catalogue (with the transition and repeat mixtures when the model has them; no repeat-policy
                   exclusions: the question is what the model expected, not what it would recommend)
    outside top g = the item ranks g or worse among the catalogue under that distribution
Per user and day:
    score        = mean nll of the day's scored events
    outside_top_share = share of them outside the top g
    most surprising = the item of the day's event with the largest nll
The recommend job ranks the day's scores over all users (percentile) and publishes those at or above
RECO_ANOMALY_PERCENTILE to `user_anomalies`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_lib.contracts import FIRST_ITEM_INDEX, PAD_INDEX

BLOCK = 256  # events scored per multiply: bounds the (events x catalogue) float32 block


@dataclass
class DaySurprise:
    """Per user with at least one scored event that day (rows into the scored batch)."""

    users: np.ndarray  # (n,) int row indices
    score: np.ndarray  # (n,) float mean negative log-likelihood
    events: np.ndarray  # (n,) int scored events
    outside_top_share: np.ndarray  # (n,) float
    most_surprising: np.ndarray  # (n,) int item index


def scored_events(items: np.ndarray, day: np.ndarray) -> np.ndarray:
    """(B, T) bool: the day's events that can be scored: a known item with a real event before it in the window."""
    follows_an_event = np.zeros_like(day)
    follows_an_event[:, 1:] = items[:, :-1] != PAD_INDEX
    return day & (items >= FIRST_ITEM_INDEX) & follows_an_event


def event_log_likelihoods(scorer, inputs: dict[str, np.ndarray], rows, columns, top_g: int, steps=None):
    """ln P and 'outside the top g' of the events at (rows, columns) of `inputs`, each predicted from the step
    before it; `scorer` is a scoring.ModelScorer, `steps` its encode_steps(inputs) if already made."""
    items = np.asarray(inputs["items"])
    vectors, gate, repeat, transition_gate = scorer.encode_steps(inputs) if steps is None else steps
    targets = items[rows, columns]
    log_p = np.empty(len(rows), np.float64)
    outside = np.empty(len(rows), bool)
    # One (events x catalogue) block reused, each pass over it in place: at 50,000 items the passes over the block
    # cost more than its multiply.
    block = np.empty((min(BLOCK, len(rows)), scorer.item_matrix.shape[1]), np.float32)
    for start in range(0, len(rows), BLOCK):
        part = slice(start, start + BLOCK)
        r, c = rows[part], columns[part] - 1
        logits = np.matmul(vectors[r, c], scorer.item_matrix, out=block[: len(r)])
        scorer.mix(logits, items[r], c, transition_gate[r, c], gate[r, c], repeat[r, c])  # log-probabilities
        target = logits[np.arange(len(r)), targets[part]].astype(np.float64)
        # The rank before normalising: softmax keeps the order.
        outside[part] = np.count_nonzero(logits > target[:, None].astype(np.float32), axis=1) >= top_g
        log_p[part] = target if scorer.mixes else target - log_normaliser(logits)
    return log_p, outside


def log_normaliser(logits: np.ndarray) -> np.ndarray:
    """(b, V) logits -> (b,) float64 log of the sum of their exponentials; overwrites `logits`."""
    peak = logits.max(axis=1, keepdims=True)
    np.subtract(logits, peak, out=logits)
    np.exp(logits, out=logits)
    return peak[:, 0].astype(np.float64) + np.log(logits.sum(axis=1, dtype=np.float64))


def day_surprise(scorer, inputs: dict[str, np.ndarray], day: np.ndarray, top_g: int, steps=None) -> DaySurprise:
    """inputs (B, T) as the model reads them; day (B, T) bool marks each user's events of the day. `steps`, when
    given, is ModelScorer.encode_steps of the users with a scored event (scored_events(...).any(axis=1)), in order."""
    items = np.asarray(inputs["items"])
    scored = scored_events(items, day)
    users = np.flatnonzero(scored.any(axis=1))
    if not len(users):
        empty = np.zeros(0)
        return DaySurprise(users, empty, empty.astype(int), empty, empty.astype(int))
    rows, columns = np.nonzero(scored[users])
    log_p, outside = event_log_likelihoods(
        scorer, {k: v[users] for k, v in inputs.items()}, rows, columns, top_g, steps
    )
    nll = -log_p
    events = np.bincount(rows, minlength=len(users))
    worst = np.full(len(users), -np.inf)
    np.maximum.at(worst, rows, nll)
    is_worst = nll == worst[rows]
    most_surprising = np.zeros(len(users), np.int64)
    # The first event reaching the user's largest nll (rows and columns come in order).
    first = np.flatnonzero(is_worst)[np.unique(rows[is_worst], return_index=True)[1]]
    most_surprising[rows[first]] = items[users][rows[first], columns[first]]
    return DaySurprise(
        users,
        np.bincount(rows, weights=nll, minlength=len(users)) / events,
        events,
        np.bincount(rows, weights=outside, minlength=len(users)) / events,
        most_surprising,
    )
