"""The training loop's parts with real TensorFlow: cluster roles, file shards, batches, the losses, the auxiliary
head, and checkpoints that resume exactly where a run stopped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.sequence_files import cycle_sequences
from model_lib.data.sequence_files import write_sequences
from model_lib.data.splits import Sequences, protocol_split
from model_lib.model.distribute import cluster_position, shard_files
from model_lib.model.examples import TrainingRows, bucket_width, epoch_batches
from model_lib.model.losses import sampling_log_q

TINY = {"embedding_dim": 16, "hidden_dim": 16, "batch_size": 32, "learning_rate": 0.01, "xla": False}


def test_cluster_position_puts_the_chief_first():
    assert cluster_position({}) == (0, 1, True)
    workers = {"cluster": {"worker": ["a:1", "b:2"]}}
    assert cluster_position({**workers, "task": {"type": "worker", "index": 0}}) == (0, 2, True)
    assert cluster_position({**workers, "task": {"type": "worker", "index": 1}}) == (1, 2, False)
    with_chief = {"cluster": {"chief": ["c:0"], "worker": ["a:1", "b:2"]}}
    assert cluster_position({**with_chief, "task": {"type": "chief", "index": 0}}) == (0, 3, True)
    assert cluster_position({**with_chief, "task": {"type": "worker", "index": 1}}) == (2, 3, False)
    with pytest.raises(ValueError, match="ps"):
        cluster_position({"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "ps", "index": 0}})


def test_every_worker_needs_its_own_file(tmp_path):
    files = [tmp_path / f"part-{i}.parquet" for i in range(3)]
    assert shard_files(files, 0, 2) == [files[0], files[2]] and shard_files(files, 1, 2) == [files[1]]
    with pytest.raises(ValueError, match="3 sequence file"):
        shard_files(files, 3, 4)


def test_epoch_batches_are_full_trimmed_deterministic_and_cover_every_row():
    sequences = cycle_sequences(100, 40, 16)
    lengths = np.random.default_rng(1).integers(2, 17, 100)
    items = np.where(np.arange(16)[None, :] >= 16 - lengths[:, None], sequences.items, 0)
    flags = (items > 0).astype(np.int32)
    rows = TrainingRows.from_sequences(Sequences(sequences.user_ids, items, flags, flags, []))
    batches = list(epoch_batches(rows, 10, 10, seed=3, epoch=1))
    assert len(batches) == 10 and all(len(targets) == 10 for _, targets, _ in batches)
    step = bucket_width(rows.item_targets.shape[1])
    for inputs, targets, _ in batches:
        width = targets.shape[1]
        assert width % step == 0 or width == rows.item_targets.shape[1]
        assert ((inputs["items"] != 0).sum(axis=1) <= width).all()
    # one pass over 100 rows in 10 full batches: every row exactly once, trimmed columns were only padding
    assert sum(len(t) for _, t, _ in batches) == len(rows)
    assert sum(int((t != 0).sum()) for _, t, _ in batches) == int((rows.item_targets != 0).sum())
    again = list(epoch_batches(rows, 10, 10, seed=3, epoch=1))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    other_epoch = list(epoch_batches(rows, 10, 10, seed=3, epoch=2))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(batches, other_epoch, strict=True))


def test_sampled_softmax_with_log_q_follows_the_full_softmax_gradient():
    """Averaged over draws, the sampled loss's gradient on the logits approaches the full softmax's, even though
    the proposal Q is far from uniform (that is what the log-Q correction is for)."""
    import tensorflow as tf

    from model_lib.model.losses import full_softmax_loss, sampled_softmax_loss

    num_items, target = 50, 7
    counts = np.r_[0, 0, np.geomspace(1000, 1, num_items - 2)]
    log_q = tf.constant(sampling_log_q(np.repeat(np.arange(num_items), counts.astype(int)), num_items))
    bias = tf.Variable(np.random.default_rng(0).normal(0, 1, num_items).astype(np.float32))
    table = tf.zeros((num_items, 4))
    user = tf.zeros((1, 4))
    targets = tf.constant([target])

    def gradient(loss_fn):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn())
        return tf.convert_to_tensor(tape.gradient(loss, bias)).numpy()

    full = gradient(lambda: full_softmax_loss(bias[None, :], targets))
    sampled = np.mean(
        [
            gradient(lambda seed=seed: sampled_softmax_loss(user, targets, table, bias, log_q, 400, [seed, 1]))
            for seed in range(30)
        ],
        axis=0,
    )
    assert np.abs(sampled - full)[2:].max() < 0.03, np.abs(sampled - full).max()
    assert sampled[target] < 0 and np.abs(sampled[:2]).max() == 0  # padding and unknown are never drawn


def test_sampled_softmax_and_event_type_head_learn_the_toy_task(settings, tmp_path):
    from model_lib.evaluation import next_behaviour
    from model_lib.model.scoring import type_probabilities
    from model_lib.model.training import evaluate_model, train_next_item_model
    from model_lib.serving.recommender import Recommender

    num_items = 62
    sequences = cycle_sequences(600, num_items, 8, event_types=3)
    files = write_sequences(sequences, tmp_path / "sequences")
    tuned = settings.updated(
        **{
            **TINY,
            "epochs": 12,
            "patience": 12,
            "softmax": "sampled",
            "sampled_negatives": 16,
            "event_type_loss_weight": 0.3,
            "event_types": ["view", "cart", "buy"],
        }
    )
    result = train_next_item_model(files, num_items, tuned, verbose=0)
    split = protocol_split(sequences)
    assert evaluate_model(result.model, split.test, num_items, (5,))["hr_5"] > 0.8
    # The head the data called for: it learns the types' cycle (which the last-type chain knows exactly here).
    found = next_behaviour.compare(type_probabilities(result.model), split, ["view", "cart", "buy"])
    model, majority = found[next_behaviour.MODEL], found["majority type"]
    assert model["accuracy"] > 0.9 and majority["accuracy"] < 0.5  # chance: 1/3
    assert model["log_loss"] < majority["log_loss"] / 10 and model["auc_buy"] > 0.9
    assert found["last type (Markov)"]["accuracy"] > 0.9
    # Served: each user's probabilities over the three types sum to one (the padding type left out).
    recommender = Recommender(result.model, toy_vocabulary(num_items), ["view", "cart", "buy"])
    served = recommender.recommend(split.test.inputs.model_inputs(), split.test.inputs.older_items, 5)
    assert served.next_event_types.shape == (len(split.test.targets), 3)
    np.testing.assert_allclose(served.next_event_types.sum(axis=1), 1.0, rtol=1e-5)


def test_the_event_type_head_is_built_only_for_data_with_several_event_types():
    from model_lib.config import ModelSettings
    from model_lib.model.training import trains_event_types

    one_type = protocol_split(cycle_sequences(20, 12, 6, event_types=1)).validation
    three_types = protocol_split(cycle_sequences(20, 12, 6, event_types=3)).validation
    assert trains_event_types(three_types, ModelSettings(event_type_loss_weight=0.2))
    assert not trains_event_types(one_type, ModelSettings(event_type_loss_weight=0.2))  # nothing to learn
    assert not trains_event_types(three_types, ModelSettings(event_type_loss_weight=0.0))  # switched off


def test_a_stopped_run_resumes_from_its_checkpoint_exactly(settings, tmp_path):
    from model_lib.model.training import train_next_item_model

    files = write_sequences(cycle_sequences(200, 30, 8), tmp_path / "sequences")
    # A shorter budget stands in for the kill, so the learning rate must not depend on the budget here.
    tuned = settings.updated(**{**TINY, "patience": 10, "lr_schedule": "constant"})
    checkpoints = tmp_path / "checkpoints"
    first = train_next_item_model(files, 30, tuned.updated(epochs=2), checkpoints, verbose=0)
    assert first.resumed_after_epoch == 0 and (checkpoints / "loop_state.json").exists()
    resumed = train_next_item_model(files, 30, tuned.updated(epochs=4), checkpoints, verbose=0)
    straight = train_next_item_model(files, 30, tuned.updated(epochs=4), tmp_path / "other", verbose=0)
    assert resumed.resumed_after_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], rel=1e-5)
    for mine, reference in zip(resumed.model.get_weights(), straight.model.get_weights(), strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-6)
    # other settings never resume a checkpoint
    fresh = train_next_item_model(files, 30, tuned.updated(epochs=1, hidden_dim=8), checkpoints, verbose=0)
    assert fresh.resumed_after_epoch == 0


def test_the_best_epoch_checkpoint_restores_every_weight_of_the_model(tmp_path):
    """A resumed run whose best epoch came before the restart takes that epoch from the best checkpoint: all of it
    (the LSTM layers, kept in a list, were once left out, so the LSTM of the last epoch stayed)."""
    import keras

    from model_lib.model.network import NextItemModel, build_model
    from model_lib.model.schedule import LoopState
    from model_lib.model.training import open_checkpoints

    keras.utils.set_random_seed(5)
    model = NextItemModel(20, 3, 5, embedding_dim=8, hidden_dim=8, lstm_layers=2, transition_neighbours=3)
    build_model(model)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    epoch = keras.Variable(0, dtype="int64", trainable=False)
    checkpoints = open_checkpoints(tmp_path / "checkpoints", model, optimizer, epoch, is_chief=True)
    best = [np.array(w) for w in model.get_weights()]
    checkpoints.save(LoopState({}), improved=True)
    for variable in model.weights:  # later epochs change everything
        variable.assign(np.asarray(variable) + 1)
    assert checkpoints.restore_best()
    for variable, saved in zip(model.weights, best, strict=True):
        np.testing.assert_array_equal(np.asarray(variable), saved, err_msg=variable.path)


def toy_vocabulary(num_items: int) -> pd.DataFrame:
    indices = np.arange(2, num_items)
    return pd.DataFrame({"item_index": indices, "item_id": [f"i{k}" for k in indices], "count": 1000 - indices})
