"""The numpy user encoder (model_lib/serving/numpy_encoder.py) against TensorFlow's own forward pass."""

import numpy as np
import pytest

from model_lib.serving.numpy_encoder import NumpyEncoder

keras = pytest.importorskip("keras")


@pytest.mark.parametrize(
    ("lstm_layers", "event_type_head", "repeat_mechanism"),
    [(1, False, False), (2, True, False), (1, True, True)],
    ids=["plain", "two_layers_with_head", "head_and_repeats"],
)
def test_the_last_step_equals_tensorflows_to_1e_5(lstm_layers, event_type_head, repeat_mechanism):
    from model_lib.model.network import NextItemModel
    from model_lib.serving.recommender import build_model

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
    )
    build_model(model)
    # Trained-looking weights: the seeded initial ones are small enough to hide a wrong gate order.
    for variable in model.trainable_variables:
        variable.assign(np.random.default_rng(3).normal(0, 0.5, variable.shape).astype(np.float32))
    rng = np.random.default_rng(4)
    items = rng.integers(1, 40, (9, 10)).astype(np.int32)
    items[0, :6] = 0  # left padding
    items[1] = 0  # no events at all
    items[2, 4] = 0  # a gap inside the window
    inputs = {
        "items": items,
        "event_types": np.where(items > 0, rng.integers(1, 5, items.shape), 0).astype(np.int32),
        "gaps": np.where(items > 0, rng.integers(1, 7, items.shape), 0).astype(np.int32),
    }
    expected = [np.asarray(output) for output in model.encode_last(inputs)]
    got = NumpyEncoder.from_model(model).encode_last(inputs)
    for name, want, have in zip(("vectors", "attention", "gate", "repeat", "next_types"), expected, got, strict=True):
        assert have.shape == want.shape, name
        np.testing.assert_allclose(have, want, atol=1e-5, rtol=1e-5, err_msg=name)


def test_models_with_self_attention_blocks_are_left_to_tensorflow():
    from model_lib.model.network import NextItemModel

    assert not NumpyEncoder.supports(NextItemModel(10, 3, 4, attention_blocks=1))
    assert NumpyEncoder.supports(NextItemModel(10, 3, 4))
