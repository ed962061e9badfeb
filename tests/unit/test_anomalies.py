"""Anomaly scores (model_lib/serving/anomalies.py) with real TensorFlow: the likelihoods are the scoring path's own,
and a trained model tells injected days from normal ones where item popularity cannot."""

import numpy as np
import pytest

from helpers.sequence_files import cycle_sequences
from model_lib.contracts import model_inputs
from model_lib.data.sequence_files import write_sequences
from model_lib.data.splits import protocol_split
from model_lib.evaluation.metrics import roc_auc
from model_lib.serving import anomalies

keras = pytest.importorskip("keras")


def tiny_scorer(seed: int, repeat_mechanism: bool, items: np.ndarray):
    """A seeded untrained model over 30 items -> (its ModelScorer, the inputs of the window `items`)."""
    from model_lib.model.network import NextItemModel, build_model
    from model_lib.model.scoring import ModelScorer

    keras.utils.set_random_seed(seed)
    model = NextItemModel(30, 4, 6, embedding_dim=8, hidden_dim=8, repeat_mechanism=repeat_mechanism)
    build_model(model)
    inputs = model_inputs(items, np.where(items > 0, 1, 0), np.where(items > 0, 2, 0))
    return ModelScorer(model), inputs


@pytest.mark.parametrize("repeat_mechanism", [False, True], ids=["softmax", "repeat_mixture"])
def test_each_event_is_scored_by_the_distribution_the_scoring_path_gives_before_it(repeat_mechanism):
    items = np.array([[0, 0, 5, 6, 7, 5], [2, 3, 4, 5, 6, 7]], np.int32)
    scorer, inputs = tiny_scorer(3, repeat_mechanism, items)
    rows, columns = np.array([0, 1, 1]), np.array([5, 5, 3])
    log_p, outside = anomalies.event_log_likelihoods(scorer, inputs, rows, columns, top_g=5)
    for k, (row, column) in enumerate(zip(rows, columns, strict=True)):
        before = {name: values[row : row + 1, :column] for name, values in inputs.items()}
        scores = scorer.score(before)[0].astype(np.float64)  # log-probabilities under the mixture, logits without
        expected = scores - np.log(np.exp(scores - scores.max()).sum()) - scores.max()
        assert log_p[k] == pytest.approx(expected[items[row, column]], abs=1e-4)
        assert outside[k] == ((expected > expected[items[row, column]]).sum() >= 5)


@pytest.mark.parametrize("repeat_mechanism", [False, True], ids=["softmax", "repeat_mixture"])
def test_one_forward_pass_gives_the_last_step_of_every_user_and_the_steps_of_the_days_users(repeat_mechanism):
    items = np.random.default_rng(2).integers(2, 30, (7, 6)).astype(np.int32)
    items[0, :3] = 0
    scorer, inputs = tiny_scorer(5, repeat_mechanism, items)
    with_steps = np.array([True, False, True, True, False, False, True])

    last, steps = scorer.encode_with_steps(inputs, with_steps)
    alone = scorer.encode(inputs)
    for field in ("vectors", "attention", "gate", "repeat", "next_types"):
        np.testing.assert_allclose(getattr(last, field), getattr(alone, field), atol=1e-5, err_msg=field)
    subset = {name: values[with_steps] for name, values in inputs.items()}
    for fused, separate in zip(steps, scorer.encode_steps(subset), strict=True):
        np.testing.assert_allclose(fused, separate, atol=1e-5)
    assert scorer.encode_with_steps(inputs, np.zeros(7, bool))[1] is None


def test_only_known_items_after_a_real_event_are_scored():
    items = np.array([[0, 0, 5, 1, 6], [0, 0, 0, 0, 7]])
    day = np.array([[False, True, True, True, True], [False, False, False, False, True]])
    # Padding, the first event of a window (nothing before it) and the unknown item (1) carry no score.
    assert anomalies.scored_events(items, day).tolist() == [[False, False, False, False, True], [False] * 5]


def test_a_trained_model_finds_injected_days_that_popularity_cannot(settings, tmp_path):
    from model_lib.model.scoring import ModelScorer
    from model_lib.model.training import train_next_item_model

    num_items = 42
    sequences = cycle_sequences(500, num_items, 10, seed=4)
    files = write_sequences(sequences, tmp_path / "sequences")
    tuned = settings.updated(
        embedding_dim=16, hidden_dim=16, batch_size=32, learning_rate=0.01, xla=False, epochs=8, patience=8
    )
    result = train_next_item_model(files, num_items, tuned, verbose=0)
    test = protocol_split(sequences).test.inputs
    rng = np.random.default_rng(9)
    injected = rng.choice(len(test), 30, replace=False)
    items = test.items.copy()
    # A burst: the day's last three events are random catalogue items. Every item is equally popular here.
    items[injected, -3:] = rng.integers(2, num_items, (len(injected), 3))
    inputs = model_inputs(items, test.event_types, test.gaps)
    day = np.zeros(items.shape, bool)
    day[:, -3:] = True
    found = anomalies.day_surprise(ModelScorer(result.model), inputs, day, top_g=5)
    truth = np.isin(found.users, injected)
    assert len(found.users) == len(test) and (found.events == 3).all()
    assert roc_auc(found.score, truth) > 0.95
    top = found.users[np.argsort(-found.score)[: len(injected)]]
    assert np.isin(top, injected).mean() > 0.8  # precision at the number injected
    assert found.outside_top_share[truth].mean() > found.outside_top_share[~truth].mean()
    assert np.isin(found.most_surprising[truth], items[injected, -3:]).all()


def test_injection_replaces_only_the_chosen_users_days_and_the_report_follows_its_definitions():
    from model_lib.evaluation import injected_anomalies

    items = np.arange(2, 2 + 40 * 6).reshape(40, 6) % 50 + 2
    eligible = np.arange(40)
    injected, kinds = injected_anomalies.inject(items, eligible, 0.1, 3, 52, seed=1)
    changed = (injected != items).any(axis=1)
    assert sorted(kinds[kinds != ""]) == ["burst", "burst", "hijack", "hijack"]
    assert not changed[kinds == ""].any() and (injected[:, :-3] == items[:, :-3]).all()
    for user in np.flatnonzero(kinds == "hijack"):  # someone else's last three events
        assert any((injected[user, -3:] == items[other, -3:]).all() for other in range(40) if other != user)
    scores = np.where(kinds != "", 2.0, 1.0)
    report = injected_anomalies.scores_report(scores, kinds)
    assert report == {"roc_auc": 1.0, "precision_at_n": 1.0, "roc_auc_hijack": 1.0, "roc_auc_burst": 1.0}
    day = np.zeros(items.shape, bool)
    day[:, -1] = True
    rare = injected_anomalies.popularity_surprise(np.array([2, 2, 2, 3]), np.array([[2], [3]]), day[:2, -1:], 4)
    assert rare[1] > rare[0]  # the rarer item is the more surprising
