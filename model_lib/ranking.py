"""What a served list may hold and how it is cut: the repeat policy and the exact top-K. The nightly lists, the
pyfunc, the promotion gate, the training's validation and every metric rank through this one module, so what is
evaluated is exactly what would be served (model_lib/evaluation/metrics.py holds the metrics over those ranks).

Repeat policy (`RepeatPolicy`, from the settings `repeat_policy` and `repeatable_event_types`): which items a user
may be recommended.
    exclude_seen    an item the user has an event on (in the sequence window or among the older items) is never
                    recommended (movies, books); with `repeatable_event_types`, an item that has an event of one
                    of those types in the window stays a candidate (re-purchase allowed, re-view not). Older items
                    beyond the window carry no event type, so they stay excluded.
    allow_repeats   every catalogue item is a candidate, seen or not (grocery, music, re-orders).
Padding (0) and the unknown index (1) are never candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_lib.contracts import FIRST_ITEM_INDEX

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
