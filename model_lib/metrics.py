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


# Largest block of the top-K pre-selection: small enough that K blocks hold few candidates, large enough that the
# block maxima are a cheap, cache-friendly pass.
TOP_K_BLOCK = 128


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, V) scores, -inf where an item must not be recommended -> (N, min(k, V)) item indices and their scores,
    best first, equal scores in item order.

    A row with fewer than k rankable items ends in -inf scores; callers drop those positions. The K best items lie
    in the K blocks (of up to TOP_K_BLOCK consecutive items) with the largest maxima: every item outside them scores
    at most the K-th largest block maximum, and those K maxima are candidates themselves. So only K blocks per row
    are partitioned instead of all V items.
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
        columns = (starts[best_blocks][:, :, None] + np.arange(block)).reshape(rows, -1)
        inside = columns < width  # the last block may be short
        columns = np.minimum(columns, width - 1)
        values = np.where(inside, np.take_along_axis(scores, columns, axis=1), -np.inf)
    else:
        columns = np.broadcast_to(np.arange(width), (rows, width))
        values = scores
    chosen = np.argpartition(-values, k - 1, axis=1)[:, :k]
    top_columns = np.take_along_axis(columns, chosen, axis=1)
    top_values = np.take_along_axis(values, chosen, axis=1)
    order = np.lexsort((top_columns, -top_values), axis=1)
    return np.take_along_axis(top_columns, order, axis=1), np.take_along_axis(top_values, order, axis=1)


def exclude_seen(scores: np.ndarray, histories: np.ndarray, older_items: list[np.ndarray]) -> np.ndarray:
    """Sets, in place, the scores of every item in a user's history or older items to -inf; returns `scores`.

    A scatter of the seen items only: unlike `seen_mask` it never builds an (N, V) array.
    """
    rows = np.repeat(np.arange(len(histories)), histories.shape[1])
    scores[rows, histories.ravel()] = -np.inf
    lengths = [len(older) for older in older_items]
    if sum(lengths):
        scores[np.repeat(np.arange(len(older_items)), lengths), np.concatenate(older_items)] = -np.inf
    return scores


def top_k_items(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """(N, V) scores and exclusions -> (N, min(k, V)) item indices, best first; -1 where no rankable item is left."""
    items, values = top_k(np.where(excluded, -np.inf, scores).astype(np.float32), k)
    return np.where(np.isneginf(values), -1, items)


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
            recommended[k].update(np.unique(top[:, :k][top[:, :k] >= 0]).tolist())
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
