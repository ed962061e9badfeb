"""Item-to-item co-occurrence of the training histories: the one definition behind the item-kNN baseline
(evaluation/baselines.py) and the model's transition component (model/network.py, `ItemTransitions`).

    co-occurrence(a, b) = number of times a and b (a != b, both known items) are at most `window` events apart in a
                          user's history, either order
    similarity(a, b)    = co-occurrence(a, b) / sqrt(count(a) count(b))      (cosine; count = the item's events)

The model cannot carry a (V, V) matrix (100,000 items: 40 GB dense), so it keeps each item's `neighbours` most similar
items: `NeighbourTable`, two (V, N) arrays (indices, similarities; zero-weight padding where an item has fewer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_lib.contracts import FIRST_ITEM_INDEX


@dataclass(frozen=True)
class KnnParams:
    window: int = 3  # co-occurring items are at most this many events apart
    last: int = 5  # a user's score sums the similarities of their last this many items


def co_occurrence_similarity(items: np.ndarray, num_items: int, window: int):
    """(N, T) left-padded item indices -> (V, V) sparse cosine similarity of items at most `window` events apart
    (scipy CSR, symmetric, zero diagonal)."""
    from scipy import sparse

    pairs_a, pairs_b = [], []
    for offset in range(1, window + 1):
        left, right = items[:, :-offset].ravel(), items[:, offset:].ravel()
        real = (left >= FIRST_ITEM_INDEX) & (right >= FIRST_ITEM_INDEX) & (left != right)
        pairs_a.append(left[real])
        pairs_b.append(right[real])
    a, b = np.concatenate(pairs_a), np.concatenate(pairs_b)
    ones = np.ones(2 * len(a), np.float32)
    counts = sparse.coo_matrix((ones, (np.concatenate([a, b]), np.concatenate([b, a]))), (num_items, num_items))
    counts = counts.tocsr()
    known = np.where(items >= FIRST_ITEM_INDEX, items, 0)
    occurrences = np.maximum(np.bincount(known.ravel(), minlength=num_items).astype(np.float32), 1.0)
    norm = sparse.diags(1.0 / np.sqrt(occurrences))
    return (norm @ counts @ norm).tocsr()


@dataclass(frozen=True)
class NeighbourTable:
    """Each item's `neighbours` most similar items: indices (V, N) int32 and similarities (V, N) float32, best first;
    an item with fewer neighbours is padded with index 0 and similarity 0 (padding, unknown and unseen items: all 0)."""

    indices: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_histories(cls, items: np.ndarray, num_items: int, neighbours: int, window: int) -> NeighbourTable:
        """The table of the histories `items` (N, T) (the training part only: no held-out event may enter it)."""
        similarity = co_occurrence_similarity(items, num_items, window)
        indices = np.zeros((num_items, neighbours), np.int32)
        weights = np.zeros((num_items, neighbours), np.float32)
        for row in range(num_items):
            start, end = similarity.indptr[row], similarity.indptr[row + 1]
            if start == end:
                continue
            columns, values = similarity.indices[start:end], similarity.data[start:end]
            # Best first; equal similarities in item order, so the table does not depend on scipy's storage order.
            best = np.lexsort((columns, -values))[:neighbours]
            indices[row, : len(best)] = columns[best]
            weights[row, : len(best)] = values[best]
        return cls(indices, weights)
