"""Ranking metrics and the repeat policy: the one definition used by training, evaluation, promotion, serving and
benchmarks.

Repeat policy (`RepeatPolicy`, from the settings `repeat_policy` and `repeatable_event_types`): which items a user
may be recommended, the same rule for the served list and for every metric.
    exclude_seen    an item the user has an event on (in the sequence window or among the older items) is never
                    recommended (movies, books); with `repeatable_event_types`, an item that has an event of one
                    of those types in the window stays a candidate (re-purchase allowed, re-view not). Older items
                    beyond the window carry no event type, so they stay excluded.
    allow_repeats   every catalogue item is a candidate, seen or not (grocery, music, re-orders).
Padding (0) and the unknown index (1) are never candidates.

Protocol: full ranking over exactly the candidates the served list would rank. For one held-out target per user:

    rank       = 1 + (candidates scoring strictly above the target) + (other candidates tied with it) / 2, the
                 expected position when ties are ordered at random (a constant scorer ranks the target mid-list,
                 never first); a target that is not a candidate is a miss (rank = infinity): a target outside the
                 catalogue
                 (index < 2), or, under exclude_seen, an item the user has seen (no "except the target": the served
                 list could never contain it)
    HR@K       = mean over users of [rank <= K]
    NDCG@K     = mean over users of [rank <= K] / log2(rank + 1)      (one relevant item, so IDCG = 1)
    MRR@K      = mean over users of [rank <= K] / rank
    coverage@K = |union of all users' top-K lists| / (V - 2)
    paired difference (two scorers, the same users): mean over users of NDCG@K(a) - NDCG@K(b), and its standard
                 error std / sqrt(N): how `reco bench accuracy` judges whether the model beats a baseline
    repeat_target_share = share of targets the user has an event on already (whatever the policy): near 0 for
                 movies, large for re-purchase data, where exclude_seen caps HR@K at 1 - this share

Next event type (`next_type_metrics`): p (N, E) the predicted chance of each configured type for the held-out
event, y its actual type.
    accuracy   = mean [argmax p == y] (ties to the first type)
    log_loss   = mean -ln max(p[y], 1e-7)
    auc_<t>    = ROC AUC of p[t] separating events of type t from the others: P(p of a t-event > p of another)
                 + P(equal) / 2 (Mann-Whitney); undefined (absent) when the hold-out has no event of t or only those
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from model_lib.contracts import FIRST_ITEM_INDEX

ScoreFunction = Callable[[dict[str, np.ndarray]], np.ndarray]


EXCLUDE_SEEN = "exclude_seen"
ALLOW_REPEATS = "allow_repeats"
REPEAT_POLICIES = (EXCLUDE_SEEN, ALLOW_REPEATS)


@dataclass(frozen=True)
class RepeatPolicy:
    """Which seen items stay candidates (see the module docstring). `repeatable_types`: event-type indices (1-based,
    as in the sequences) whose items stay candidates under exclude_seen."""

    name: str = EXCLUDE_SEEN
    repeatable_types: tuple[int, ...] = ()

    def __post_init__(self):
        if self.name not in REPEAT_POLICIES:
            raise ValueError(f"repeat policy must be one of {REPEAT_POLICIES}, got {self.name!r}")

    @property
    def allows_repeats(self) -> bool:
        """True when some seen item may be recommended again (the model's repeat mechanism is worth having)."""
        return self.name == ALLOW_REPEATS or bool(self.repeatable_types)

    def describe(self) -> str:
        if self.name == EXCLUDE_SEEN and self.repeatable_types:
            return f"{EXCLUDE_SEEN} except event types {list(self.repeatable_types)}"
        return self.name

    def excluded_pairs(
        self, items: np.ndarray, event_types: np.ndarray, older_items: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, T) window items and event types, older items per row -> (rows, items) that must not be recommended
        (padding and unknown excepted: callers exclude those always)."""
        if self.name == ALLOW_REPEATS:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        rows = np.repeat(np.arange(len(items)), items.shape[1])
        flat = items.ravel().astype(np.int64)
        older_rows, older_flat = older_item_pairs(older_items)
        all_rows, all_items = np.concatenate([rows, older_rows]), np.concatenate([flat, older_flat])
        if not self.repeatable_types:
            return all_rows, all_items
        repeatable = np.isin(event_types.ravel(), self.repeatable_types)
        width = int(max(all_items.max(initial=0), 1)) + 1
        allowed = np.unique(rows[repeatable] * width + flat[repeatable])
        keep = ~np.isin(all_rows * width + all_items, allowed)
        return all_rows[keep], all_items[keep]

    def mask(
        self, items: np.ndarray, event_types: np.ndarray, older_items: list[np.ndarray], num_items: int
    ) -> np.ndarray:
        """-> (N, V) bool, true where an item must not be recommended (always padding and unknown)."""
        excluded = np.zeros((len(items), num_items), dtype=bool)
        excluded[self.excluded_pairs(items, event_types, older_items)] = True
        excluded[:, :FIRST_ITEM_INDEX] = True
        return excluded

    def exclude(
        self, scores: np.ndarray, items: np.ndarray, event_types: np.ndarray, older_items: list[np.ndarray]
    ) -> np.ndarray:
        """Sets, in place, the scores of the excluded items to -inf; returns `scores`. A scatter of the excluded
        items only: unlike `mask` it never builds an (N, V) bool array."""
        scores[self.excluded_pairs(items, event_types, older_items)] = -np.inf
        scores[:, :FIRST_ITEM_INDEX] = -np.inf
        return scores


def older_item_pairs(older_items: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Older items per row -> (rows, items), int64, one pair per older item."""
    lengths = np.fromiter(map(len, older_items), np.int64, len(older_items))
    rows = np.repeat(np.arange(len(older_items)), lengths)
    items = np.concatenate(older_items).astype(np.int64) if lengths.sum() else np.zeros(0, np.int64)
    return rows, items


EXCLUDE_SEEN_POLICY = RepeatPolicy()


def seen_items(items: np.ndarray, older_items: list[np.ndarray], num_items: int) -> np.ndarray:
    """(N, T) window items + older items -> (N, V) bool, true for every item the user has an event on."""
    return RepeatPolicy().mask(items, np.zeros_like(items), older_items, num_items)


def repeat_targets(items: np.ndarray, older_items: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """(N,) bool: the target is an item the user already has an event on (in the window or among older items)."""
    in_window = (items == targets[:, None]).any(axis=1)
    in_older = np.array(
        [bool(np.isin(target, older).any()) for target, older in zip(targets, older_items, strict=True)], bool
    )
    return (in_window | in_older) & (targets >= FIRST_ITEM_INDEX)


def suggest_policy(repeat_target_share: float, threshold: float = 0.05) -> str:
    """allow_repeats when more than `threshold` of the held-out next events are items the user had already seen:
    above that, exclude_seen makes those targets unreachable for every model."""
    return ALLOW_REPEATS if repeat_target_share > threshold else EXCLUDE_SEEN


def target_ranks(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """(N, V) scores, (N,) targets, (N, V) exclusions -> (N,) 1-based ranks among the candidates; inf for a target
    that is not a candidate (excluded, or outside the catalogue)."""
    rows = np.arange(len(targets))
    candidates = ~excluded
    candidates[:, :FIRST_ITEM_INDEX] = False
    target_scores = scores[rows, targets][:, None]
    above = ((scores > target_scores) & candidates).sum(axis=1)
    tied = ((scores == target_scores) & candidates).sum(axis=1) - 1  # the target ties with itself
    ranks = 1.0 + above + np.maximum(tied, 0) / 2.0
    return np.where(candidates[rows, targets], ranks, np.inf)


# Largest block of the top-K pre-selection: small enough that K blocks hold few candidates, large enough that the
# block maxima are a cheap, cache-friendly pass.
TOP_K_BLOCK = 128


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, V) scores, -inf where an item must not be recommended -> (N, min(k, V)) item indices and their scores,
    best first, equal scores in item order.

    A row with fewer than k rankable items ends in -inf scores; callers drop those positions. The K best items lie
    in the K blocks (of up to TOP_K_BLOCK consecutive items) with the largest maxima: every item outside them scores
    at most the K-th largest block maximum, and those K maxima are candidates themselves. So only K blocks per row
    are looked at instead of all V items, and within them only the items scoring at least that K-th maximum (at
    least K per row, the block maxima; typically not many more) are sorted. A narrow catalogue (fewer than 32 x K
    items) skips the blocks: its candidates are the items scoring at least the row's K-th largest score.
    """
    rows, width = scores.shape
    k = min(k, width)
    if k == 0:
        return np.zeros((rows, 0), np.int64), np.zeros((rows, 0), scores.dtype)
    block = min(TOP_K_BLOCK, width // (4 * k))  # at least 4K blocks, so K of them are a small share
    if block >= 8:
        starts = np.arange(0, width, block)
        block_max = np.maximum.reduceat(scores, starts, axis=1)
        best_blocks = np.argpartition(-block_max, k - 1, axis=1)[:, :k]
        threshold = np.take_along_axis(block_max, best_blocks, axis=1).min(axis=1)
        # Where more than K blocks reach the K-th maximum, the lowest-numbered of the tied blocks must be the ones
        # taken, or an equal score of a lower item could be left out; model scores rarely tie, popular counts do.
        tied = (block_max >= threshold[:, None]).sum(axis=1) > k
        if tied.any():
            best_blocks[tied] = np.argsort(-block_max[tied], axis=1, kind="stable")[:, :k]
        columns = (starts[best_blocks][:, :, None] + np.arange(block)).reshape(rows, -1)
        inside = columns < width  # the last block may be short
        columns = np.minimum(columns, width - 1)
        values = np.where(inside, np.take_along_axis(scores, columns, axis=1), -np.inf)
    else:
        values, columns = scores, np.broadcast_to(np.arange(width), (rows, width))
        threshold = -np.partition(-scores, k - 1, axis=1)[:, k - 1]  # each row's K-th largest score
    return _best_candidates(values, columns, values >= threshold[:, None], k)


def _best_candidates(
    values: np.ndarray, columns: np.ndarray, candidate: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) values and their item columns, and which of them are candidates (at least k per row) -> the k best
    candidates per row, best first, ties in item order: one sort of every row's candidates together."""
    row, position = np.nonzero(candidate)  # row-major: grouped by row, in row order
    candidate_values, candidate_columns = values[row, position], columns[row, position]
    order = np.lexsort((candidate_columns, -candidate_values, row))
    first = np.concatenate(([0], np.cumsum(np.bincount(row, minlength=len(values)))[:-1]))
    best = order[first[:, None] + np.arange(k)]
    return candidate_columns[best], candidate_values[best]


def top_k_items(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """(N, V) scores and exclusions -> (N, min(k, V)) item indices, best first; -1 where no rankable item is left."""
    items, values = top_k(np.where(excluded, -np.inf, scores).astype(np.float32), k)
    return np.where(np.isneginf(values), -1, items)


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """hr_K, ndcg_K, mrr_K and ndcg_K_stderr (the standard error of the NDCG mean: how noisy the estimate is)."""
    result = {}
    for k in ks:
        hit = ranks <= k
        gains = ndcg_gains(ranks, k)
        result[f"hr_{k}"] = float(hit.mean()) if len(ranks) else 0.0
        result[f"ndcg_{k}"] = float(gains.mean()) if len(ranks) else 0.0
        result[f"mrr_{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean()) if len(ranks) else 0.0
        result[f"ndcg_{k}_stderr"] = float(gains.std(ddof=1) / np.sqrt(len(ranks))) if len(ranks) > 1 else 0.0
    return result


def evaluate_holdout(
    score: ScoreFunction,
    inputs: dict[str, np.ndarray],
    older_items: list[np.ndarray],
    targets: np.ndarray,
    num_items: int,
    ks: Iterable[int] = (10, 20),
    batch_size: int = 512,
    policy: RepeatPolicy = EXCLUDE_SEEN_POLICY,
    with_ranks: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics of a scorer on a hold-out under a repeat policy, in batches; returns hr_K, ndcg_K,
    mrr_K, coverage_K, users and repeat_target_share (and `ranks`, each user's rank (N,), when `with_ranks`: what
    paired_difference compares). `inputs` holds at least "items" and "event_types"."""
    ks = tuple(ks)
    ranks, recommended = [], {k: set() for k in ks}
    for start in range(0, len(targets), batch_size):
        window = slice(start, start + batch_size)
        batch = {name: values[window] for name, values in inputs.items()}
        scores = np.asarray(score(batch), dtype=np.float32)
        excluded = policy.mask(batch["items"], batch["event_types"], older_items[window], num_items)
        ranks.append(target_ranks(scores, targets[window], excluded))
        top = top_k_items(scores, excluded, max(ks))
        for k in ks:
            recommended[k].update(np.unique(top[:, :k][top[:, :k] >= 0]).tolist())
    all_ranks = np.concatenate(ranks) if ranks else np.zeros(0)
    result = metrics_from_ranks(all_ranks, ks)
    for k in ks:
        result[f"coverage_{k}"] = len(recommended[k]) / max(1, num_items - FIRST_ITEM_INDEX)
    result["users"] = float(len(all_ranks))
    repeats = repeat_targets(inputs["items"], older_items, targets)
    result["repeat_target_share"] = float(repeats.mean()) if len(repeats) else 0.0
    if with_ranks:
        result["ranks"] = all_ranks
    return result


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """(N,) ranks -> (N,) each user's NDCG@K: [rank <= K] / log2(rank + 1)."""
    return np.where(ranks <= k, 1.0 / np.log2(np.minimum(ranks, 1e12) + 1.0), 0.0)


def paired_difference(ranks: np.ndarray, reference_ranks: np.ndarray, k: int) -> dict[str, float]:
    """Two scorers' ranks of the same users' targets -> the mean per-user NDCG@K difference (first minus reference)
    and its standard error: the noise of a comparison on the same users, smaller than either mean's own."""
    difference = ndcg_gains(ranks, k) - ndcg_gains(reference_ranks, k)
    stderr = float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0
    return {"difference": float(difference.mean()) if len(difference) else 0.0, "stderr": stderr}


def popularity_scores(train_items: np.ndarray, num_items: int) -> np.ndarray:
    """(V,) item counts in the training inputs: the most-popular baseline's score for every user."""
    counts = np.bincount(train_items.ravel(), minlength=num_items).astype(np.float32)
    counts[:FIRST_ITEM_INDEX] = 0
    return counts


def next_type_metrics(probabilities: np.ndarray, targets: np.ndarray, names: list[str]) -> dict[str, float]:
    """probabilities (N, E) over the event types `names` (column j is 1-based type index j + 1), targets (N,) 1-based
    type indices -> accuracy, log_loss and auc_<name> for every type (see the module docstring)."""
    columns = np.asarray(targets, dtype=np.int64) - 1
    picked = probabilities[np.arange(len(columns)), columns]
    result = {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == columns)) if len(columns) else float("nan"),
        "log_loss": float(np.mean(-np.log(np.maximum(picked, 1e-7)))) if len(columns) else float("nan"),
    }
    for column, name in enumerate(names):
        positive = columns == column
        if 0 < positive.sum() < len(columns):
            result[f"auc_{name}"] = roc_auc(probabilities[:, column], positive)
    return result


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U over average ranks)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average rank of each group of equal scores (1-based).
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    positives = int(positive.sum())
    negatives = len(scores) - positives
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))
