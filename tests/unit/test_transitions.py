"""The model's item-to-item transitions (layers.ItemTransitions, data/cooccurrence.py): the table, the same
probabilities in training and serving, and a toy where the last item decides the next one."""

import numpy as np
import pytest

from helpers.sequence_files import cycle_sequences
from model_lib.contracts import model_inputs
from model_lib.data.cooccurrence import NeighbourTable
from model_lib.data.sequence_files import write_sequences
from model_lib.data.splits import protocol_split

TINY = {"embedding_dim": 16, "hidden_dim": 16, "batch_size": 32, "learning_rate": 0.01, "xla": True}


def test_the_table_keeps_each_items_most_co_occurring_items_best_first():
    # 2 follows 3 three times, 4 once; nothing co-occurs with padding or the unknown item (1).
    items = np.array([[0, 2, 3, 9, 9], [0, 0, 2, 3, 1], [2, 3, 0, 0, 0], [0, 0, 0, 2, 4]], np.int32)
    table = NeighbourTable.from_histories(items, 10, neighbours=2, window=1)
    assert table.indices[2].tolist() == [3, 4]
    assert table.weights[2, 0] == pytest.approx(3 / np.sqrt(4 * 3))  # cosine: 3 co-occurrences, 4 and 3 events
    assert table.weights[2, 0] > table.weights[2, 1] > 0
    assert table.indices[9].tolist() == [3, 0] and table.weights[9, 1] == 0.0  # one neighbour, then padding
    assert not table.weights[:2].any() and not table.indices[:2].any()


def test_served_transition_probabilities_are_the_ones_training_maximises():
    import keras

    from model_lib.model.network import NextItemModel, build_model

    keras.utils.set_random_seed(2)
    model = NextItemModel(30, 3, 5, embedding_dim=8, hidden_dim=8, transition_neighbours=4, transition_recent=3)
    build_model(model)
    rng = np.random.default_rng(1)
    indices = rng.integers(2, 30, (30, 4)).astype(np.int32)
    weights = rng.uniform(0.1, 1.0, (30, 4)).astype(np.float32)
    indices[:2], weights[:2] = 0, 0.0
    model.transitions.set_table(indices, weights)
    model.transitions.offset_logits.assign(np.array([0.3, -0.2, -1.0], np.float32))
    items = rng.integers(2, 30, (6, 7)).astype(np.int32)
    items[0, :4] = 0
    targets = rng.integers(2, 30, items.shape).astype(np.int32)

    # The whole width, and a batch trimmed to fewer steps than the recent items the table reads (training trims
    # batches to bucket widths).
    for width in (items.shape[1], 2):
        check_one_width(model, items[:, -width:], targets[:, -width:])


def check_one_width(model, items, targets):
    from model_lib.model.scoring import ModelScorer, recent_items

    trained = np.asarray(model.transitions.target_probability(items, targets))
    table = ModelScorer(model).transitions
    assert trained.shape == items.shape
    for step in range(items.shape[1]):
        served = table.probabilities(recent_items(items, np.full(len(items), step), table.recent), 30)
        real = items[:, step] > 0
        assert np.allclose(served[real].sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(served[np.arange(len(items)), targets[:, step]], trained[:, step], atol=1e-6)


def successor_walks(users: int, num_items: int, steps: int, jump: float, seed: int):
    """Users follow a hidden successor of each item (one cycle over the catalogue), and jump to a random item
    with probability `jump`: the next item is mostly decided by the last one."""
    walks = cycle_sequences(users, num_items, steps, seed=seed)
    rng = np.random.default_rng(seed + 1)
    successor = np.zeros(num_items, np.int64)
    successor[walks.items[:, :-1].ravel()] = walks.items[:, 1:].ravel()
    items = walks.items.copy()
    for step in range(1, steps):
        jumps = rng.random(users) < jump
        items[:, step] = np.where(jumps, rng.integers(2, num_items, users), successor[items[:, step - 1]])
    return type(walks)(walks.user_ids, items, walks.event_types, walks.gaps, walks.older_items)


def test_transitions_learn_from_few_examples_what_the_network_alone_cannot(settings, tmp_path):
    """300 items, each seen a few times as a successor: within the same short budget the network alone barely
    leaves most-popular, while the model with transitions predicts the successor, and its gate trusts them."""
    from model_lib.model.scoring import ModelScorer
    from model_lib.model.training import evaluate_model, train_next_item_model

    num_items = 300
    sequences = successor_walks(240, num_items, 8, jump=0.1, seed=3)
    files = write_sequences(sequences, tmp_path / "sequences")
    split = protocol_split(sequences)
    hit_rates, gates = {}, {}
    for neighbours in (0, 20):
        chosen = settings.updated(**TINY, epochs=4, patience=4, transition_neighbours=neighbours, transition_window=1)
        result = train_next_item_model(files, num_items, chosen, verbose=0)
        hit_rates[neighbours] = evaluate_model(result.model, split.test, num_items, (1,))["hr_1"]
        if neighbours:
            gates[neighbours] = ModelScorer(result.model).encode(split.test.inputs.model_inputs()).transition_gate
    assert hit_rates[20] > 0.6, hit_rates  # the successor, unless the user jumped (10%) or it was seen (excluded)
    assert hit_rates[20] > hit_rates[0] + 0.3, hit_rates
    assert gates[20].mean() > 0.5, gates[20].mean()


@pytest.mark.parametrize("with_encoder", [True, False], ids=["numpy_encoder", "keras_weights"])
def test_a_version_saved_before_the_transitions_still_loads_and_scores_the_same(tmp_path, with_encoder):
    """A champion registered in format 3 (no transitions in its config) stays scoreable by this code."""
    import json

    import keras
    import pandas as pd

    from model_lib.model.network import NextItemModel, build_model
    from model_lib.serving.recommender import Recommender

    keras.utils.set_random_seed(4)
    model = NextItemModel(40, 5, 7, embedding_dim=8, hidden_dim=8, repeat_mechanism=True)
    build_model(model)
    vocabulary = pd.DataFrame({"item_index": np.arange(2, 40), "item_id": [f"i{k}" for k in range(2, 40)], "count": 1})
    trained = Recommender(model, vocabulary, ["view", "cart", "buy", "like"])
    folder = trained.save(tmp_path / "v3")
    config = json.loads((folder / "model_config.json").read_text())
    for key in ("transition_neighbours", "transition_recent"):  # what a format-3 writer never wrote
        del config["model"][key]
    (folder / "model_config.json").write_text(json.dumps({**config, "format": 3}))
    if not with_encoder:
        (folder / "encoder.npz").unlink()

    loaded = Recommender.load(folder)
    assert loaded.scorer.transitions is None
    rng = np.random.default_rng(2)
    items = rng.integers(2, 40, (5, 6)).astype(np.int32)
    inputs = model_inputs(items, np.ones_like(items), np.full_like(items, 3))
    np.testing.assert_allclose(loaded.score(inputs), trained.score(inputs), atol=1e-5, rtol=1e-5)


def test_each_reason_is_the_history_item_whose_removal_costs_its_recommendation_most(settings, tmp_path):
    """bench/reasons.py on a model trained where the last item decides the next: every recommendation's reason is
    the item whose removal lowers its log P the most, and the reasons differ within a list."""
    import pandas as pd

    from bench.reasons import measure, without_item
    from model_lib.data.splits import Sequences
    from model_lib.model.training import train_next_item_model
    from model_lib.serving.recommender import Recommender

    num_items = 120
    walks = successor_walks(240, num_items, 8, jump=0.3, seed=5)
    files = write_sequences(walks, tmp_path / "sequences")
    chosen = settings.updated(**TINY, epochs=4, patience=4, transition_neighbours=10)
    model = train_next_item_model(files, num_items, chosen, verbose=0).model
    indices = np.arange(2, num_items)
    vocabulary = pd.DataFrame({"item_index": indices, "item_id": [f"i{k}" for k in indices], "count": 1})
    recommender = Recommender(model, vocabulary, settings.sessionize.event_types)
    times = 1_000_000 + np.cumsum(np.full(walks.items.shape, 600), axis=1)
    users = Sequences(walks.user_ids, walks.items, walks.event_types, walks.gaps, walks.older_items, times)
    figures = measure(recommender, users.subset(np.arange(40)), k=5, max_bucket=20, seed=1)
    assert figures["pairs"] == 40 * 5
    assert figures["top_share"] >= 0.5 and figures["above_random"] >= 0.8, figures
    assert figures["reasons_per_list"] > 1.5, figures

    # Removing an item re-pads the window and recomputes the gaps from the events' times.
    items, gaps = without_item(np.array([0, 5, 6, 5, 7]), np.ones(5), np.array([0, 10, 70, 130, 4000]), 5, 20)[::2]
    assert items.tolist() == [0, 0, 0, 6, 7] and gaps.tolist() == [0, 0, 0, 1, 13]  # 2 + floor(log2(3931))


@pytest.mark.parametrize("encoder", ["nextitnet", "svae"])
def test_the_other_encoders_learn_a_sequence_with_the_same_training(settings, tmp_path, encoder):
    """NextItNet's dilated convolutions and the sequential VAE in place of the plain LSTM: the same training loop
    learns the hidden cycle (transitions off, so the encoder has to), and the model serves through the scorer."""
    import keras

    from model_lib.model.scoring import ModelScorer
    from model_lib.model.training import evaluate_model, train_next_item_model

    num_items = 40
    sequences = cycle_sequences(300, num_items, 10)
    files = write_sequences(sequences, tmp_path / "sequences")
    chosen = settings.updated(**TINY, epochs=10, patience=10, transition_neighbours=0, encoder=encoder)
    result = train_next_item_model(files, num_items, chosen, verbose=0)
    assert result.model.encoder == encoder
    split = protocol_split(sequences)
    assert evaluate_model(result.model, split.test, num_items, (3,))["hr_3"] > 0.8
    # Served deterministically (the VAE's mean, no sampling): the same scores twice.
    inputs = split.test.inputs.model_inputs()
    np.testing.assert_array_equal(ModelScorer(result.model).score(inputs), ModelScorer(result.model).score(inputs))
    if encoder == "svae":
        outputs = result.model.forward({k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}, training=True)
        assert float(keras.ops.min(outputs["kl"])) >= 0.0
