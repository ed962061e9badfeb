"""The numpy user encoder (model_lib/model/numpy_encoder.py) against TensorFlow's own forward pass."""

import numpy as np
import pytest

from model_lib.model.numpy_encoder import NumpyEncoder

keras = pytest.importorskip("keras")

LAST_STEP = ("vectors", "attention", "gate", "repeat", "next_types", "transition_gate")
EVERY_STEP = ("step_vectors", "step_gates", "step_repeats", "step_transition_gates")


def trained_looking_model(
    lstm_layers: int, event_type_head: bool, repeat_mechanism: bool, transitions: int = 0, encoder: str = "lstm"
):
    from model_lib.model.network import NextItemModel, build_model

    keras.utils.set_random_seed(11)
    model = NextItemModel(
        40,
        5,
        7,
        embedding_dim=16,
        hidden_dim=12,
        lstm_layers=lstm_layers,
        event_type_head=event_type_head,
        repeat_mechanism=repeat_mechanism,
        transition_neighbours=transitions,
        encoder=encoder,
    )
    build_model(model)
    # Trained-looking weights: the seeded initial ones are small enough to hide a wrong gate order.
    for variable in model.trainable_variables:
        variable.assign(np.random.default_rng(3).normal(0, 0.5, variable.shape).astype(np.float32))
    if transitions:  # a table as co-occurrence gives it: neighbours of every known item, none for padding/unknown
        rng = np.random.default_rng(5)
        indices = rng.integers(2, 40, (40, transitions)).astype(np.int32)
        weights = rng.uniform(0.1, 1.0, (40, transitions)).astype(np.float32)
        indices[:2], weights[:2] = 0, 0.0
        model.transitions.set_table(indices, weights)
    return model


def awkward_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    items = rng.integers(1, 40, (9, 10)).astype(np.int32)
    items[0, :6] = 0  # left padding
    items[1] = 0  # no events at all
    items[2, 4] = 0  # a gap inside the window
    return {
        "items": items,
        "event_types": np.where(items > 0, rng.integers(1, 5, items.shape), 0).astype(np.int32),
        "gaps": np.where(items > 0, rng.integers(1, 7, items.shape), 0).astype(np.int32),
    }


def assert_outputs_equal(names, expected, got):
    for name, want, have in zip(names, expected, got, strict=True):
        want = np.asarray(want)
        assert have.shape == want.shape, name
        assert have.dtype == np.float32, name
        np.testing.assert_allclose(have, want, atol=1e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize(
    ("lstm_layers", "event_type_head", "repeat_mechanism", "transitions", "encoder"),
    [
        (1, False, False, 0, "lstm"),
        (2, True, False, 0, "lstm"),
        (1, True, True, 0, "lstm"),
        (1, False, True, 4, "lstm"),
        (1, True, True, 4, "svae"),
    ],
    ids=["plain", "two_layers_with_head", "head_and_repeats", "repeats_and_transitions", "variational"],
)
def test_every_output_equals_tensorflows_to_1e_5(lstm_layers, event_type_head, repeat_mechanism, transitions, encoder):
    model = trained_looking_model(lstm_layers, event_type_head, repeat_mechanism, transitions, encoder)
    inputs = awkward_inputs()
    encoder = NumpyEncoder.from_model(model)

    assert_outputs_equal(LAST_STEP, model.encode_last(inputs), encoder.encode_last(inputs))
    assert_outputs_equal(EVERY_STEP, model.encode_steps(inputs), encoder.encode_steps(inputs))
    assert_outputs_equal(
        LAST_STEP + EVERY_STEP, model.encode_last_and_steps(inputs), encoder.encode_last_and_steps(inputs)
    )


def test_users_of_every_history_length_in_any_order_get_tensorflows_outputs():
    """The encoder computes each step only for the users whose window has started (it orders them by their first
    real event): users of lengths 0..T in shuffled order must still get their own outputs, in their own rows."""
    model = trained_looking_model(2, True, True)
    rng = np.random.default_rng(8)
    steps = 10
    lengths = rng.permutation(np.r_[np.arange(steps + 1), np.arange(steps + 1)])
    items = np.where(
        np.arange(steps)[None, :] >= steps - lengths[:, None], rng.integers(1, 40, (len(lengths), steps)), 0
    )
    inputs = {
        "items": items.astype(np.int32),
        "event_types": np.where(items > 0, rng.integers(1, 5, items.shape), 0).astype(np.int32),
        "gaps": np.where(items > 0, rng.integers(1, 7, items.shape), 0).astype(np.int32),
    }
    encoder = NumpyEncoder.from_model(model)
    assert_outputs_equal(
        LAST_STEP + EVERY_STEP, model.encode_last_and_steps(inputs), encoder.encode_last_and_steps(inputs)
    )


def test_the_file_form_and_the_keras_model_rebuilt_from_it_keep_every_weight(tmp_path):
    model = trained_looking_model(1, True, True, transitions=4)
    encoder = NumpyEncoder.from_model(model)
    loaded = NumpyEncoder.load(encoder.save(tmp_path / "encoder.npz"), encoder.config)
    assert sorted(loaded.arrays) == sorted(encoder.arrays)
    for name, values in encoder.arrays.items():
        assert np.array_equal(loaded.arrays[name], values), name
    assert (loaded.num_items, loaded.num_event_types, loaded.num_gap_buckets) == (40, 5, 7)
    assert loaded.event_type_head and loaded.repeat_mechanism and loaded.transitions
    assert loaded.arrays["transition_neighbour_items"].dtype == np.int32

    rebuilt = loaded.to_model()
    for mine, theirs in zip(rebuilt.get_weights(), model.get_weights(), strict=True):
        assert np.array_equal(mine, theirs)


def test_models_with_self_attention_blocks_are_left_to_tensorflow():
    from model_lib.model.network import NextItemModel

    assert not NumpyEncoder.supports(NextItemModel(10, 3, 4, attention_blocks=1))
    assert not NumpyEncoder.supports({"attention_blocks": 2})
    assert NumpyEncoder.supports(NextItemModel(10, 3, 4))
    assert NumpyEncoder.supports(NextItemModel(10, 3, 4, encoder="svae"))
    assert not NumpyEncoder.supports(NextItemModel(10, 3, 4, encoder="nextitnet"))
    assert not NumpyEncoder.supports({"encoder": "nextitnet"})
    with pytest.raises(ValueError, match="self-attention blocks"):
        NumpyEncoder.from_model(NextItemModel(10, 3, 4, attention_blocks=1))


LOAD_AND_SCORE = """
import sys
import numpy as np
from model_lib.serving.recommender import Recommender

folder, inputs_file, output_file = sys.argv[1:]
inputs = dict(np.load(inputs_file))
loaded = Recommender.load(folder)
result = loaded.recommend(inputs, [np.zeros(0, int)] * len(inputs["items"]), k=6)
steps = loaded.scorer.encode_steps(inputs)
np.savez(output_file, scores=loaded.score(inputs), items=result.items, reasons=result.reasons,
         next_types=result.next_event_types, step_vectors=steps[0], step_gates=steps[1])
print(sorted(name for name in ("tensorflow", "keras") if name in sys.modules))
"""


def test_a_loaded_version_scores_as_tensorflow_does_without_importing_it(tmp_path):
    """What the nightly workers, the gate and the pyfunc run (Recommender.load) against the trained Keras model."""
    import subprocess
    import sys

    import pandas as pd

    from model_lib.serving.recommender import Recommender

    model = trained_looking_model(1, True, True, transitions=4)
    vocabulary = pd.DataFrame({"item_index": np.arange(2, 40), "item_id": [f"i{k}" for k in range(2, 40)], "count": 1})
    trained = Recommender(model, vocabulary, ["view", "cart", "buy", "like"])
    folder = trained.save(tmp_path / "recommender")
    assert (folder / "encoder.npz").exists()
    inputs = awkward_inputs()
    np.savez(tmp_path / "inputs.npz", **inputs)

    script = tmp_path / "score.py"
    script.write_text(LOAD_AND_SCORE)
    run = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip().splitlines()[-1] == "[]"  # neither TensorFlow nor Keras was imported

    numpy_side = np.load(tmp_path / "out.npz")
    expected = trained.recommend(inputs, [np.zeros(0, int)] * len(inputs["items"]), k=6)
    steps = trained.scorer.encode_steps(inputs)
    finite = np.isfinite(trained.score(inputs))
    assert np.array_equal(np.isfinite(numpy_side["scores"]), finite)
    np.testing.assert_allclose(numpy_side["scores"][finite], trained.score(inputs)[finite], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(numpy_side["next_types"], expected.next_event_types, atol=1e-5)
    np.testing.assert_allclose(numpy_side["step_vectors"], steps[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(numpy_side["step_gates"], steps[1], atol=1e-5)
    assert np.array_equal(numpy_side["items"], expected.items)
    assert np.array_equal(numpy_side["reasons"], expected.reasons)
