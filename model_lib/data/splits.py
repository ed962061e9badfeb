"""Data splitting, in one place, over the left-padded sequences: leave-one-out and time-based.

Leave-one-out (the accuracy protocol). For a user whose history (oldest first) is e_1 .. e_n:
- test:       input e_1 .. e_{n-1}, target e_n
- validation: input e_1 .. e_{n-2}, target e_{n-1}
- training:   e_1 .. e_{n-2}, the model predicts e_{t+1} from e_1 .. e_t at every position t
Only users with at least 3 events are held out (they need one training event); others train on everything.

Time-based (what a nightly model actually faces). Two cutoffs, validation_cutoff < test_cutoff (epoch seconds):
- training:   every event at or before validation_cutoff
- validation: input = events <= validation_cutoff, target = the first event after it, if that is <= test_cutoff
- test:       input = events <= test_cutoff, target = the first event after it
A user is held out only when the input is not empty and a target exists.

In both, a target never appears in the input that predicts it, and training never sees a held-out event
(tests/unit/test_splits.py checks this on random sequences).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_lib.contracts import PAD_INDEX, UNKNOWN_ITEM_INDEX, model_inputs

MIN_EVENTS_FOR_HOLDOUT = 3


@dataclass(frozen=True)
class Sequences:
    """Aligned (N, L) arrays, left-padded with 0, plus each user's older items beyond the window.

    items / event_types / gaps are int32; times (optional, only the time-based split needs it) holds int64
    epoch seconds.
    """

    user_ids: np.ndarray
    items: np.ndarray
    event_types: np.ndarray
    gaps: np.ndarray
    older_items: list[np.ndarray]
    times: np.ndarray | None = None

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
            None if self.times is None else self.times[rows],
        )

    def model_inputs(self, item_lookup: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The model's input dict; `item_lookup` (old index -> new index) re-indexes the items if given."""
        items = self.items if item_lookup is None else item_lookup[self.items]
        return model_inputs(items, self.event_types, self.gaps)

    def without_item(self, index: int) -> Sequences:
        """The same users with every event of item `index` removed and the rest re-padded on the left.

        The accuracy protocol drops rare items (mapped to the unknown index) once, before splitting.
        """
        removed = self.items == index
        if not removed.any():
            return self
        # A stable sort moves removed events to the left (in front of the padding), keeping the others' order.
        order = np.argsort(~removed, axis=1, kind="stable")
        blank = np.arange(self.items.shape[1])[None, :] < removed.sum(axis=1)[:, None]

        def compact(array: np.ndarray) -> np.ndarray:
            return np.where(blank, 0, np.take_along_axis(array, order, axis=1)).astype(array.dtype)

        return Sequences(
            self.user_ids,
            compact(self.items),
            compact(self.event_types),
            compact(self.gaps),
            [older[older != index] for older in self.older_items],
            None if self.times is None else compact(self.times),
        )

    def last_events(self, steps: int) -> Sequences:
        """The newest `steps` columns (the model's window); the items of the events cut off join the older items,
        so what may not be recommended stays the same."""
        if self.items.shape[1] <= steps:
            return self
        cut = self.items[:, :-steps]
        older = [
            np.union1d(older, row[row != PAD_INDEX]).astype(np.int64)
            for older, row in zip(self.older_items, cut, strict=True)
        ]
        return Sequences(
            self.user_ids,
            self.items[:, -steps:],
            self.event_types[:, -steps:],
            self.gaps[:, -steps:],
            older,
            None if self.times is None else self.times[:, -steps:],
        )

    def drop_last(self, count: int | np.ndarray) -> Sequences:
        """The same users with their newest `count` events (one count, or one per user) removed, re-padded."""
        if np.all(np.asarray(count) == 0):
            return self
        return Sequences(
            self.user_ids,
            *(shift_right(a, count) for a in (self.items, self.event_types, self.gaps)),
            self.older_items,
            None if self.times is None else shift_right(self.times, count),
        )


@dataclass(frozen=True)
class HoldOut:
    """Inputs to rank from, the single target item per user and that event's type (1-based type index)."""

    inputs: Sequences
    targets: np.ndarray
    target_types: np.ndarray | None = None

    def last_events(self, steps: int) -> HoldOut:
        """The same hold-out with inputs cut to the model's window (Sequences.last_events)."""
        return HoldOut(self.inputs.last_events(steps), self.targets, self.target_types)


@dataclass(frozen=True)
class Split:
    train: Sequences
    validation: HoldOut
    test: HoldOut


def shift_right(array: np.ndarray, count: int | np.ndarray) -> np.ndarray:
    """Drops the last `count` columns of each row (one count, or one per row) and pads zeros on the left."""
    counts = np.broadcast_to(np.asarray(count), (array.shape[0],))
    columns = np.arange(array.shape[1])[None, :] - counts[:, None]
    shifted = np.take_along_axis(array, np.clip(columns, 0, None), axis=1)
    return np.where(columns >= 0, shifted, 0).astype(array.dtype)


def leave_one_out(sequences: Sequences) -> Split:
    is_held = sequences.lengths >= MIN_EVENTS_FOR_HOLDOUT
    evaluated = sequences.subset(np.flatnonzero(is_held))
    return Split(
        train=sequences.drop_last(np.where(is_held, 2, 0)),
        validation=HoldOut(evaluated.drop_last(2), evaluated.items[:, -2].copy(), evaluated.event_types[:, -2].copy()),
        test=HoldOut(evaluated.drop_last(1), evaluated.items[:, -1].copy(), evaluated.event_types[:, -1].copy()),
    )


def protocol_split(sequences: Sequences, window: int | None = None) -> Split:
    """The accuracy protocol used by training, evaluation and the benchmark: items below the vocabulary's minimum
    count (the unknown index) are dropped once, then leave-one-out. With `window` (the model's seq_len) the
    hold-outs' inputs are cut to the last `window` events, as scoring reads them; training keeps the whole stored
    history (it is cut into windows)."""
    split = leave_one_out(sequences.without_item(UNKNOWN_ITEM_INDEX))
    if window is None:
        return split
    return Split(split.train, split.validation.last_events(window), split.test.last_events(window))


def _holdout_after(sequences: Sequences, cutoff: int, until: int | None) -> HoldOut:
    """Input = events <= cutoff; target = the first event after cutoff (and <= until when given)."""
    is_event = sequences.items != PAD_INDEX
    after = (sequences.times > cutoff) & is_event
    n_after = after.sum(axis=1)
    n_before = (is_event & ~after).sum(axis=1)
    width = sequences.items.shape[1]
    target_column = np.clip(width - n_after, 0, width - 1)
    rows = np.arange(len(sequences))
    target_time = sequences.times[rows, target_column]
    held = (n_after > 0) & (n_before > 0) & ((target_time <= until) if until is not None else True)
    chosen = np.flatnonzero(held)
    inputs = sequences.subset(chosen).drop_last(n_after[chosen])
    return HoldOut(
        inputs,
        sequences.items[chosen, target_column[chosen]].copy(),
        sequences.event_types[chosen, target_column[chosen]].copy(),
    )


def time_split(sequences: Sequences, validation_cutoff: int, test_cutoff: int) -> Split:
    """See the module docstring; cutoffs are epoch seconds and must lie inside the sequence window's time span."""
    if sequences.times is None:
        raise ValueError("a time-based split needs the sequences' event_times")
    if not validation_cutoff < test_cutoff:
        raise ValueError(f"validation cutoff {validation_cutoff} must be before test cutoff {test_cutoff}")
    is_event = sequences.items != PAD_INDEX
    train = sequences.drop_last(((sequences.times > validation_cutoff) & is_event).sum(axis=1))
    return Split(
        train=train.subset(np.flatnonzero(train.lengths > 0)),
        validation=_holdout_after(sequences, validation_cutoff, test_cutoff),
        test=_holdout_after(sequences, test_cutoff, None),
    )


def next_item_pairs(train: Sequences) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Training inputs (steps 1..L-1), next-item targets and next-event-type targets (steps 2..L).

    Targets 0 (padding) are masked out of the loss."""
    inputs = model_inputs(train.items[:, :-1], train.event_types[:, :-1], train.gaps[:, :-1])
    return inputs, train.items[:, 1:], train.event_types[:, 1:]
