import numpy as np
import pytest

from model_lib.data.splits import Sequences, leave_one_out, next_item_pairs, protocol_split, shift_right, time_split


def make(rows, times=None):
    items = np.array(rows, dtype=np.int32)
    return Sequences(
        np.array([f"u{i}" for i in range(len(rows))], dtype=object),
        items,
        (items > 0).astype(np.int32),
        (items > 0).astype(np.int32) * 2,
        [np.array([], int)] * len(rows),
        None if times is None else np.array(times, dtype=np.int64),
    )


def random_sequences(seed: int, users: int = 200, width: int = 12) -> Sequences:
    """Random histories (lengths 0..width, distinct event ids as items, increasing times) to check the rules on."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, width + 1, users)
    columns = np.arange(width)[None, :]
    is_event = columns >= width - lengths[:, None]
    items = np.where(is_event, rng.permutation(users * width).reshape(users, width) + 2, 0)
    times = np.where(is_event, np.cumsum(rng.integers(1, 100, (users, width)), axis=1), 0)
    return make(items, times)


def held_events(holdout) -> list[set]:
    return [set(row[row > 0].tolist()) for row in holdout.inputs.items]


def test_shift_right_drops_newest_and_pads_left():
    assert shift_right(np.array([[0, 1, 2, 3]]), 2).tolist() == [[0, 0, 0, 1]]
    assert shift_right(np.array([[0, 1, 2, 3], [4, 5, 6, 7]]), np.array([1, 3])).tolist() == [
        [0, 0, 1, 2],
        [0, 0, 0, 4],
    ]


def test_leave_one_out_never_shows_a_target_in_its_input():
    seqs = make([[0, 2, 3, 4, 5], [0, 0, 0, 6, 7], [9, 8, 7, 6, 5]])
    split = leave_one_out(seqs)
    assert split.test.targets.tolist() == [5, 5]  # the user with 2 events is not held out
    assert split.validation.targets.tolist() == [4, 6]
    assert split.test.inputs.items.tolist() == [[0, 0, 2, 3, 4], [0, 9, 8, 7, 6]]
    assert split.validation.inputs.items.tolist() == [[0, 0, 0, 2, 3], [0, 0, 9, 8, 7]]
    # training sees neither held-out event of held-out users, and everything of the others
    assert split.train.items.tolist() == [[0, 0, 0, 2, 3], [0, 0, 0, 6, 7], [0, 0, 9, 8, 7]]
    inputs, targets, type_targets = next_item_pairs(split.train)
    assert inputs["items"].tolist()[0] == [0, 0, 0, 2] and targets.tolist()[0] == [0, 0, 2, 3]
    assert type_targets.shape == targets.shape


def test_protocol_split_drops_rare_items_once_then_holds_out_the_last_events():
    seqs = make([[0, 2, 1, 3, 4], [1, 5, 1, 6, 1]])  # 1 = an item below the minimum count
    dropped = seqs.without_item(1)
    assert dropped.items.tolist() == [[0, 0, 2, 3, 4], [0, 0, 0, 5, 6]]
    # every aligned column moves with its item
    assert (dropped.event_types != 0).tolist() == (dropped.items != 0).tolist()
    split = protocol_split(seqs)
    assert split.test.targets.tolist() == [4]  # the second user keeps 2 events: too few to hold out
    assert split.validation.targets.tolist() == [3]
    assert 1 not in split.train.items


@pytest.mark.parametrize("seed", range(5))
def test_leave_one_out_leaks_nothing_on_random_histories(seed):
    seqs = random_sequences(seed)
    split = leave_one_out(seqs)
    train_events = set(split.train.items[split.train.items > 0].tolist())
    for holdout in (split.validation, split.test):
        assert not any(t in events for t, events in zip(holdout.targets, held_events(holdout), strict=True))
        assert not train_events & set(holdout.targets.tolist())
    # the validation input is the test input minus the validation target: one step back in time
    assert (split.validation.inputs.items == shift_right(split.test.inputs.items, 1)).all()


def test_time_split_uses_the_first_event_after_each_cutoff():
    seqs = make(
        [[0, 2, 3, 4, 5], [0, 0, 6, 7, 8], [0, 0, 0, 0, 9]], [[0, 10, 20, 30, 40], [0, 0, 5, 25, 26], [0, 0, 0, 0, 50]]
    )
    split = time_split(seqs, validation_cutoff=20, test_cutoff=30)
    assert split.train.items.tolist() == [[0, 0, 0, 2, 3], [0, 0, 0, 0, 6]]  # the third user has nothing before 20
    assert split.validation.targets.tolist() == [4, 7] and split.validation.inputs.items.tolist()[1] == [0, 0, 0, 0, 6]
    assert split.test.targets.tolist() == [5]  # the second user has nothing after 30
    assert split.test.inputs.items.tolist() == [[0, 0, 2, 3, 4]]
    assert split.test.inputs.times.tolist() == [[0, 0, 10, 20, 30]]


@pytest.mark.parametrize("seed", range(5))
def test_time_split_leaks_nothing_on_random_histories(seed):
    seqs = random_sequences(seed)
    split = time_split(seqs, validation_cutoff=300, test_cutoff=500)
    assert split.train.times.max() <= 300
    for holdout, cutoff in ((split.validation, 300), (split.test, 500)):
        assert len(holdout.targets) > 0 and holdout.inputs.times.max() <= cutoff
        assert not any(t in events for t, events in zip(holdout.targets, held_events(holdout), strict=True))
    target_times = {int(seqs.times[seqs.items == t][0]) for t in split.validation.targets}
    assert all(300 < t <= 500 for t in target_times)
