"""Data splitting, in one place: leave-one-out over the left-padded sequences.

For a user whose history (oldest first) is e_1 .. e_n:
- test:       input e_1 .. e_{n-1}, target e_n
- validation: input e_1 .. e_{n-2}, target e_{n-1}
- training:   e_1 .. e_{n-2}, the model predicts e_{t+1} from e_1 .. e_t at every position t
A target never appears in the input that predicts it, and training never sees either held-out event.
Only users with at least 3 events are held out (they need one training event); others train on everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_lib.schemas import PAD_INDEX

MIN_EVENTS_FOR_HOLDOUT = 3


@dataclass(frozen=True)
class Sequences:
    """Aligned (N, L) int32 arrays, left-padded with 0, plus each user's older items beyond the window."""

    user_ids: np.ndarray
    items: np.ndarray
    event_types: np.ndarray
    gaps: np.ndarray
    older_items: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        return (self.items != PAD_INDEX).sum(axis=1)

    def subset(self, rows: np.ndarray) -> Sequences:
        """The users at the given integer row positions."""
        return Sequences(
            self.user_ids[rows],
            self.items[rows],
            self.event_types[rows],
            self.gaps[rows],
            [self.older_items[i] for i in rows],
        )

    def model_inputs(self, item_lookup: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The model's input dict; `item_lookup` (old index -> new index) re-indexes the items if given."""
        items = self.items if item_lookup is None else item_lookup[self.items]
        return {"items": items, "event_types": self.event_types, "gaps": self.gaps}

    def drop_last(self, count: int) -> Sequences:
        """The same users with their newest `count` events removed (re-padded on the left)."""
        if count == 0:
            return self
        return Sequences(
            self.user_ids,
            *(shift_right(a, count) for a in (self.items, self.event_types, self.gaps)),
            self.older_items,
        )


@dataclass(frozen=True)
class HoldOut:
    """Inputs to rank from and the single target item per user."""

    inputs: Sequences
    targets: np.ndarray


@dataclass(frozen=True)
class LeaveOneOut:
    train: Sequences
    validation: HoldOut
    test: HoldOut


def shift_right(array: np.ndarray, count: int) -> np.ndarray:
    """Drops the last `count` columns and pads `count` zeros on the left, keeping the width."""
    padded = np.zeros_like(array)
    padded[:, count:] = array[:, :-count]
    return padded


def leave_one_out(sequences: Sequences) -> LeaveOneOut:
    is_held = sequences.lengths >= MIN_EVENTS_FOR_HOLDOUT
    evaluated = sequences.subset(np.flatnonzero(is_held))
    train = Sequences(
        sequences.user_ids,
        *(
            np.where(is_held[:, None], shift_right(a, 2), a)
            for a in (sequences.items, sequences.event_types, sequences.gaps)
        ),
        sequences.older_items,
    )
    return LeaveOneOut(
        train=train,
        validation=HoldOut(evaluated.drop_last(2), evaluated.items[:, -2].copy()),
        test=HoldOut(evaluated.drop_last(1), evaluated.items[:, -1].copy()),
    )


def next_item_pairs(train: Sequences) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Training inputs (steps 1..L-1) and next-item targets (steps 2..L); targets 0 (padding) are masked out."""
    inputs = {
        "items": train.items[:, :-1],
        "event_types": train.event_types[:, :-1],
        "gaps": train.gaps[:, :-1],
    }
    return inputs, train.items[:, 1:]
