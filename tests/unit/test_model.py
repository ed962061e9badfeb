"""The Keras model and the Recommender around it, with real TensorFlow."""

import numpy as np
import pandas as pd
import pytest

from helpers.sequence_files import cycle_sequences
from model_lib.data.sequence_files import write_sequences
from model_lib.data.splits import protocol_split
from model_lib.evaluation.metrics import seen_items as seen_mask

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module", params=[0, 2], ids=["narm_attention", "attention_blocks"])
def model(request):
    from model_lib.model.network import NextItemModel, build_model

    keras.utils.set_random_seed(1)
    m = NextItemModel(
        num_items=30,
        num_event_types=4,
        num_gap_buckets=6,
        embedding_dim=8,
        hidden_dim=8,
        attention_blocks=request.param,
    )
    build_model(m)
    return m


def batch(items, types=None, gaps=None):
    items = np.array(items, dtype=np.int32)
    return {
        "items": items,
        "event_types": np.array(types, np.int32) if types is not None else (items > 0).astype(np.int32),
        "gaps": np.array(gaps, np.int32) if gaps is not None else (items > 0).astype(np.int32) * 3,
    }


def test_output_shapes(model):
    inputs = batch([[0, 0, 5, 6, 7], [2, 3, 4, 5, 6]])
    assert tuple(model(inputs).shape) == (2, 5, 30)
    vectors, attention, gate, repeat, next_types, transition_gate = model.encode_last(inputs)
    assert tuple(vectors.shape) == (2, 8) and tuple(attention.shape) == (2, 5)
    assert tuple(gate.shape) == (2,) and tuple(repeat.shape) == (2, 5)
    assert np.allclose(gate, 0.0) and np.allclose(repeat, 0.0)  # no repeat mechanism in this model
    assert tuple(next_types.shape) == (2, 4) and np.allclose(next_types, 0.0)  # nor an event-type head
    assert tuple(transition_gate.shape) == (2,)
    assert np.allclose(transition_gate, 0.0) == (model.transitions is None)


def test_padded_positions_never_change_the_scores(model):
    short = batch([[0, 5, 6, 7]])
    long_padding = batch([[0, 0, 0, 0, 0, 5, 6, 7]])
    junk_in_padding = batch(
        [[0, 0, 0, 0, 0, 5, 6, 7]], types=[[3, 2, 1, 3, 2, 1, 1, 1]], gaps=[[5, 4, 3, 2, 1, 3, 3, 3]]
    )
    from model_lib.model.scoring import ModelScorer

    scorer = ModelScorer(model)
    reference = scorer.score(short)
    for other in (long_padding, junk_in_padding):
        np.testing.assert_allclose(scorer.score(other), reference, rtol=1e-5, atol=1e-5)


def test_attention_is_causal_and_ignores_padding(model):
    _, weights = model.encode(batch([[0, 0, 4, 5, 6]]))
    weights = np.asarray(weights)[0]
    assert np.allclose(weights[:, :2], 0.0)  # padded keys
    assert np.allclose(np.triu(weights, k=1), 0.0)  # future keys
    assert np.allclose(weights[2:].sum(axis=1), 1.0)  # every real step attends over its past
    assert np.allclose(weights[:2], 0.0)  # padded queries produce zeros, not NaN


@pytest.mark.parametrize("attention_blocks", [0, 1])
def test_learns_a_sequential_task_far_above_chance(settings, tmp_path, attention_blocks):
    """Users walk a hidden item cycle; chance HR@5 among ~55 unseen candidates is ~0.09."""
    from model_lib.model.training import evaluate_model, train_next_item_model

    num_items = 62
    sequences = cycle_sequences(600, num_items, 8)
    files = write_sequences(sequences, tmp_path / "sequences")
    tuned = settings.updated(
        **{
            "epochs": 12,
            "batch_size": 32,
            "embedding_dim": 16,
            "hidden_dim": 16,
            "learning_rate": 0.01,
            "patience": 12,
            "attention_blocks": attention_blocks,
        }
    )
    result = train_next_item_model(files, num_items, tuned, verbose=0)
    test = evaluate_model(result.model, protocol_split(sequences).test, num_items, (5,))
    assert test["hr_5"] > 0.8, test
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_recommender_round_trip_excludes_seen_and_falls_back_to_popular(model, tmp_path):
    from model_lib.model.numpy_encoder import NumpyEncoder
    from model_lib.serving.recommender import SOURCE_MODEL, SOURCE_POPULAR, Recommender

    vocabulary = pd.DataFrame(
        {"item_index": np.arange(2, 30), "item_id": [f"i{k}" for k in range(2, 30)], "count": np.arange(30, 2, -1)}
    )
    recommender = Recommender(model, vocabulary, ["view", "cart", "buy"])
    loaded = Recommender.load(recommender.save(tmp_path / "rec"))
    # A loaded version scores in numpy when the encoder covers its network, else with TensorFlow as trained.
    assert isinstance(loaded.model, NumpyEncoder) == (not model.attention_blocks)
    inputs = batch([[0, 4, 5, 6], [0, 0, 1, 1]])  # the second user has only unknown items
    np.testing.assert_allclose(loaded.score(inputs), recommender.score(inputs), rtol=1e-5, atol=1e-5)
    result = loaded.recommend(inputs, [np.array([7]), np.zeros(0, int)], k=5)
    excluded = seen_mask(inputs["items"], [np.array([7]), np.zeros(0, int)], 30)
    assert not excluded[np.arange(2)[:, None], result.items].any()
    assert result.sources.tolist() == [SOURCE_MODEL, SOURCE_POPULAR]
    assert result.items[1].tolist() == [2, 3, 4, 5, 6]  # most popular first
    assert result.reasons.shape == (2, 5) and set(result.reasons[0]) <= {4, 5, 6} and (result.reasons[1] == -1).all()
    assert [len(set(row)) for row in result.items] == [5, 5]


def test_a_newer_vocabulary_is_translated_by_raw_id_and_free_indices_never_rank(model):
    from model_lib.data.vocabulary import vocabulary_item_ids
    from model_lib.serving.recommender import Recommender

    # The model knows i2..i29 except i9 (a free index since an item left its vocabulary).
    known = [k for k in range(2, 30) if k != 9]
    vocabulary = pd.DataFrame({"item_index": known, "item_id": [f"i{k}" for k in known], "count": 1})
    recommender = Recommender(model, vocabulary, ["view", "cart", "buy"])
    # The day's vocabulary: i4 kept index 2's place is taken by a newcomer; i5 at 3; a brand-new item at 4.
    day = pd.DataFrame({"item_index": [2, 3, 4], "item_id": ["i4", "i5", "new"], "count": 1})
    lookup = recommender.translation_from(vocabulary_item_ids(day))
    assert lookup.tolist() == [0, 1, 4, 5, 1]
    result = recommender.recommend(batch([[0, 4, 5, 6]]), [np.zeros(0, int)], k=24)  # every rankable item
    assert 9 not in result.items[0] and 0 not in result.items[0] and 1 not in result.items[0]


def test_each_recommendation_is_explained_by_the_attended_history_item_most_like_it():
    from model_lib.serving.recommender import explaining_items

    # Unit embeddings on a circle: 2 and 3 point along x, 4 and 5 along y, 6 along -x, 7 halfway between x and y,
    # 8 at 225 degrees (cosine -0.71 with both x and y).
    def at(degrees):
        return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]

    unit = np.array([[0, 0], [0, 0], at(0), at(2), at(90), at(88), at(180), at(45), at(225)], np.float32)
    items = np.array([[0, 1, 2, 4], [0, 0, 2, 4], [0, 0, 1, 1]])  # padding, unknown, then x-like and y-like items
    attention = np.array([[0.6, 0.2, 0.1, 0.1], [0.0, 0.0, 0.3, 0.7], [0.0, 0.0, 0.5, 0.5]], np.float32)
    chosen = np.array([[3, 5, 2], [7, 6, 8], [3, 5, 2]])
    reasons = explaining_items(chosen, items, attention, unit)
    # User 0: similarity decides between equally attended items, padding and unknown never explain, and a repeat
    # is explained by itself.
    assert reasons[0].tolist() == [2, 4, 2]
    # User 1: equally similar (item 7), attention decides; item 6 is opposite 2 and orthogonal to 4, so 4 explains
    # it. Item 8 is dissimilar to both: the more attended 4 explains it (0.7 x 0.15 > 0.3 x 0.15), where a raw
    # attention x cosine would pick the less attended 2 (0.3 x -0.71 > 0.7 x -0.71).
    assert reasons[1].tolist() == [4, 4, 4]
    assert reasons[2].tolist() == [-1, -1, -1]  # no known item: no reason (the popular fallback)
