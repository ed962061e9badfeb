import numpy as np

from model_lib.splits import Sequences, leave_one_out, next_item_pairs, shift_right


def make(rows):
    items = np.array(rows, dtype=np.int32)
    return Sequences(
        np.array([f"u{i}" for i in range(len(rows))], dtype=object),
        items,
        (items > 0).astype(np.int32),
        (items > 0).astype(np.int32) * 2,
        [np.array([], int)] * len(rows),
    )


def test_shift_right_drops_newest_and_pads_left():
    assert shift_right(np.array([[0, 1, 2, 3]]), 2).tolist() == [[0, 0, 0, 1]]


def test_leave_one_out_never_shows_a_target_in_its_input():
    seqs = make([[0, 2, 3, 4, 5], [0, 0, 0, 6, 7], [9, 8, 7, 6, 5]])
    split = leave_one_out(seqs)
    assert split.test.targets.tolist() == [5, 5]  # the user with 2 events is not held out
    assert split.validation.targets.tolist() == [4, 6]
    assert split.test.inputs.items.tolist() == [[0, 0, 2, 3, 4], [0, 9, 8, 7, 6]]
    assert split.validation.inputs.items.tolist() == [[0, 0, 0, 2, 3], [0, 0, 9, 8, 7]]
    # training sees neither held-out event of held-out users, and everything of the others
    assert split.train.items.tolist() == [[0, 0, 0, 2, 3], [0, 0, 0, 6, 7], [0, 0, 9, 8, 7]]
    inputs, targets = next_item_pairs(split.train)
    assert inputs["items"].tolist()[0] == [0, 0, 0, 2] and targets.tolist()[0] == [0, 0, 2, 3]
