"""Ranking metrics, the one definition used by training, evaluation, promotion and benchmarks.

Protocol: full ranking over the whole catalogue (item indices 2..V-1; 0 = padding and 1 = unknown are never
candidates). Items the user has already seen (the input history and its older items) are excluded from the
candidates, except the target itself. For one held-out target per user:

    rank       = 1 + number of candidate items whose score is strictly greater than the target's score
                 (a target outside the catalogue, index < 2, is a miss: rank = infinity)
    HR@K       = mean over users of [rank <= K]
    NDCG@K     = mean over users of [rank <= K] / log2(rank + 1)      (one relevant item, so IDCG = 1)
    MRR@K      = mean over users of [rank <= K] / rank
    coverage@K = |union of all users' top-K lists| / (V - 2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from model_lib.schemas import FIRST_ITEM_INDEX

ScoreFunction = Callable[[dict[str, np.ndarray]], np.ndarray]


def seen_mask(histories: np.ndarray, older_items: list[np.ndarray], num_items: int) -> np.ndarray:
    """(N, T) item histories + older items -> (N, V) bool, true where an item must not be recommended.

    Padding and the unknown index are always excluded.
    """
    mask = np.zeros((len(histories), num_items), dtype=bool)
    rows = np.repeat(np.arange(len(histories)), histories.shape[1])
    mask[rows, histories.ravel()] = True
    for row, older in enumerate(older_items):
        if len(older):
            mask[row, older] = True
    mask[:, :FIRST_ITEM_INDEX] = True
    return mask


def target_ranks(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """(N, V) scores, (N,) targets, (N, V) exclusions -> (N,) 1-based ranks (inf for unknown targets)."""
    rows = np.arange(len(targets))
    candidates = ~excluded
    candidates[rows, targets] = True  # the target is never excluded
    candidates[:, :FIRST_ITEM_INDEX] = False
    target_scores = scores[rows, targets][:, None]
    ranks = 1.0 + ((scores > target_scores) & candidates).sum(axis=1)
    return np.where(targets >= FIRST_ITEM_INDEX, ranks, np.inf)


def top_k_items(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """(N, V) scores -> (N, k) item indices, best first, never an excluded item."""
    masked = np.where(excluded, -np.inf, scores)
    k = min(k, masked.shape[1])
    part = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(masked, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    result = {}
    for k in ks:
        hit = ranks <= k
        result[f"hr_{k}"] = float(hit.mean()) if len(ranks) else 0.0
        result[f"ndcg_{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean()) if len(ranks) else 0.0
        result[f"mrr_{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean()) if len(ranks) else 0.0
    return result


def evaluate_holdout(
    score: ScoreFunction,
    inputs: dict[str, np.ndarray],
    older_items: list[np.ndarray],
    targets: np.ndarray,
    num_items: int,
    ks: Iterable[int] = (10, 20),
    batch_size: int = 512,
) -> dict[str, float]:
    """Full-ranking metrics of a scorer on a hold-out, in batches; returns hr_K, ndcg_K, mrr_K, coverage_K."""
    ks = tuple(ks)
    ranks, recommended = [], {k: set() for k in ks}
    for start in range(0, len(targets), batch_size):
        window = slice(start, start + batch_size)
        batch = {name: values[window] for name, values in inputs.items()}
        scores = np.asarray(score(batch), dtype=np.float32)
        excluded = seen_mask(batch["items"], older_items[window], num_items)
        ranks.append(target_ranks(scores, targets[window], excluded))
        top = top_k_items(scores, excluded, max(ks))
        for k in ks:
            recommended[k].update(np.unique(top[:, :k]).tolist())
    all_ranks = np.concatenate(ranks) if ranks else np.zeros(0)
    result = metrics_from_ranks(all_ranks, ks)
    for k in ks:
        result[f"coverage_{k}"] = len(recommended[k]) / max(1, num_items - FIRST_ITEM_INDEX)
    result["users"] = float(len(all_ranks))
    return result


def popularity_scores(train_items: np.ndarray, num_items: int) -> np.ndarray:
    """(V,) item counts in the training inputs: the most-popular baseline's score for every user."""
    counts = np.bincount(train_items.ravel(), minlength=num_items).astype(np.float32)
    counts[:FIRST_ITEM_INDEX] = 0
    return counts
