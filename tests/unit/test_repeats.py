"""Repeat policy, the repeat/explore mechanism, training windows and budgets, and the baselines: small data."""

import numpy as np
import pytest

from helpers.sequence_files import cycle_sequences
from model_lib.config import TrainingSettings
from model_lib.data.sequence_files import write_sequences
from model_lib.data.splits import HoldOut, Sequences, protocol_split
from model_lib.evaluation import baselines
from model_lib.model.examples import TrainingRows
from model_lib.model.schedule import TrainingBudget, track_early_stopping
from model_lib.ranking import ALLOW_REPEATS, RepeatPolicy

TINY = {"embedding_dim": 16, "hidden_dim": 16, "batch_size": 32, "learning_rate": 0.01, "xla": False}


def shoppers_and_explorers(users: int, num_items: int, steps: int, basket: int = 3, seed: int = 0) -> Sequences:
    """Half the users re-buy from a basket of their own (items drawn at random from it, so which items differs
    from user to user); the other half walk one hidden cycle over the catalogue and never repeat an item."""
    rng = np.random.default_rng(seed)
    shoppers = users // 2
    baskets = np.stack([2 + rng.choice(num_items - 2, basket, replace=False) for _ in range(shoppers)])
    bought = np.take_along_axis(baskets, rng.integers(0, basket, (shoppers, steps)), axis=1)
    walks = cycle_sequences(users - shoppers, num_items, steps, seed=seed).items
    items = np.vstack([bought, walks]).astype(np.int32)
    return Sequences(
        np.array([f"u{k:04d}" for k in range(users)], dtype=object),
        items,
        np.full_like(items, 4),  # "purchase"
        np.full_like(items, 3),
        [np.zeros(0, np.int64) for _ in range(users)],
    )


def test_the_repeat_mechanism_learns_who_rebuys(settings, tmp_path):
    from model_lib.model.scoring import ModelScorer
    from model_lib.model.training import evaluate_model, train_next_item_model

    num_items = 40
    sequences = shoppers_and_explorers(400, num_items, 10)
    files = write_sequences(sequences, tmp_path / "sequences")
    repeats = settings.updated(**{**TINY, "epochs": 20, "patience": 20, "repeat_policy": ALLOW_REPEATS})
    result = train_next_item_model(files, num_items, repeats, verbose=0)
    assert result.model.repeat_mechanism
    split = protocol_split(sequences)
    shopper = np.char.startswith(split.test.inputs.user_ids.astype(str), "u0") & (
        np.array([int(u[1:]) for u in split.test.inputs.user_ids]) < 200
    )
    policy = RepeatPolicy(ALLOW_REPEATS)
    metrics = {
        who: evaluate_model(
            result.model, HoldOut(split.test.inputs.subset(rows), split.test.targets[rows]), num_items, (1, 3), policy
        )
        for who, rows in (("shoppers", np.flatnonzero(shopper)), ("explorers", np.flatnonzero(~shopper)))
    }
    # A shopper's target may be a basket item not drawn in the window yet (~3%); an explorer never repeats.
    assert metrics["shoppers"]["repeat_target_share"] > 0.9 and metrics["explorers"]["repeat_target_share"] == 0.0
    assert metrics["shoppers"]["hr_3"] > 0.85, metrics  # the basket's 3 items on top; most popular: ~3/38
    assert metrics["explorers"]["hr_1"] > 0.8, metrics  # the cycle's next item
    gate = ModelScorer(result.model).encode(split.test.inputs.model_inputs()).gate
    assert gate[shopper].mean() > 0.6 > 0.3 > gate[~shopper].mean(), (gate[shopper].mean(), gate[~shopper].mean())
    # Under exclude_seen a shopper's repeat target is unreachable, for every scorer: HR is capped at 1 - that share.
    shoppers_only = HoldOut(split.test.inputs.subset(np.flatnonzero(shopper)), split.test.targets[shopper])
    excluded = evaluate_model(result.model, shoppers_only, num_items, (10,))
    assert excluded["hr_10"] <= 1.0 - excluded["repeat_target_share"] < 0.1


def test_repeat_mixture_scores_are_a_distribution_that_favours_the_history(settings):
    import keras

    from model_lib.model.network import NextItemModel, build_model
    from model_lib.model.scoring import ModelScorer

    keras.utils.set_random_seed(3)
    model = NextItemModel(20, 3, 6, embedding_dim=8, hidden_dim=8, repeat_mechanism=True)
    build_model(model)
    inputs = {"items": np.array([[0, 4, 5, 4]], np.int32), "event_types": np.ones((1, 4), np.int32)}
    inputs["gaps"] = inputs["event_types"] * 3
    scorer = ModelScorer(model)
    last = scorer.encode(inputs)
    probabilities = np.exp(scorer.score(inputs))[0]
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < last.gate[0] < 1.0
    assert last.repeat[0, 0] == 0.0 and last.repeat[0].sum() == pytest.approx(1.0, abs=1e-5)
    # The history items hold at least their repeat share of the probability.
    assert probabilities[[4, 5]].sum() >= last.gate[0] - 1e-5


def test_a_recommended_item_is_a_repeat_exactly_when_the_user_has_an_event_on_it():
    from model_lib.serving.recommender import repeat_flags

    rng = np.random.default_rng(6)
    items = rng.integers(0, 30, (40, 8))  # 0 is padding, 1 the unknown item
    older = [rng.integers(2, 30, rng.integers(0, 6)) for _ in range(40)]
    chosen = rng.integers(-1, 30, (40, 5))  # -1: no item at that position
    expected = np.array(
        [
            [item >= 2 and (item in set(row) | set(old)) for item in picks]
            for picks, row, old in zip(chosen, items, older, strict=True)
        ]
    )
    assert expected.any() and not expected.all()
    assert np.array_equal(repeat_flags(chosen, items, older), expected)
    in_window = (chosen[:, :, None] == items[:, None, :]).any(axis=2) & (chosen >= 2)
    assert np.array_equal(repeat_flags(chosen, items, [np.zeros(0, np.int64)] * 40), in_window)


def test_long_histories_give_one_window_per_stride():
    rng = np.random.default_rng(0)
    items = np.zeros((2, 26), np.int32)
    items[0] = 2 + rng.integers(0, 20, 26)  # 26 events
    items[1, -6:] = 2 + rng.integers(0, 20, 6)  # 6 events
    train = Sequences(np.array(["a", "b"]), items, (items > 0).astype(np.int32), (items > 0) * 3, [np.zeros(0)] * 2)
    rows = TrainingRows.from_sequences(train, steps=8, stride=8)
    # 25 next-item pairs of the long user: windows of 8 ending at pair 25, 17, 9 and 1; one window of the short one.
    assert len(rows) == 5
    trained = rows.item_targets[rows.item_targets > 1]
    assert len(trained) == 25 + 5  # every next-item pair exactly once
    assert sorted(trained.tolist()) == sorted(items[0, 1:].tolist() + items[1, -5:].tolist())


def test_cutting_to_the_window_keeps_the_cut_items_excluded():
    items = np.array([[2, 3, 4, 5, 6]], np.int32)
    sequences = Sequences(np.array(["a"]), items, np.ones_like(items), np.ones_like(items), [np.array([9])])
    cut = sequences.last_events(3)
    assert cut.items.tolist() == [[4, 5, 6]] and cut.older_items[0].tolist() == [2, 3, 9]


def test_the_budget_follows_the_data_up_to_a_cap():
    # 11 updates a pass: 20 passes are 220 updates, below the cap, one validation per pass.
    small = TrainingBudget.of(TrainingSettings(epochs=20, max_updates=10_000), 11)
    assert (small.rounds, small.steps_per_round, small.total_updates) == (20, 11, 220)
    # 200 passes are 2,200 updates: validated every 8 passes (88 updates), 25 times.
    longer = TrainingBudget.of(TrainingSettings(epochs=200, max_updates=10_000), 11)
    assert (longer.rounds, longer.steps_per_round, longer.total_updates) == (25, 88, 2200)
    # 400 updates a pass: the cap of 10,000 updates comes first (25 passes).
    large = TrainingBudget.of(TrainingSettings(epochs=200, max_updates=10_000), 400)
    assert (large.rounds, large.steps_per_round, large.total_updates) == (25, 400, 10_000)
    validated = TrainingBudget.of(TrainingSettings(epochs=50, max_updates=1000, eval_every_updates=300), 400)
    assert (validated.rounds, validated.steps_per_round) == (4, 300)
    passes = TrainingBudget.of(TrainingSettings(max_updates=0, epochs=5), 11)
    assert (passes.rounds, passes.steps_per_round) == (5, 11)


def test_the_time_budget_shortens_the_plan_and_ends_the_learning_rate_with_it():
    import keras

    from model_lib.model.schedule import LoopState, learning_rate_schedule, replan

    training = TrainingSettings(epochs=20, max_updates=0, train_minutes=1.0, learning_rate=0.01, min_lr_ratio=0.1)
    budget = TrainingBudget.of(training, 10)
    schedule = learning_rate_schedule(training, budget.total_updates)
    assert float(schedule(100)) > 0.005  # half-way through the plan of 200 updates
    # The first round compiled (20 s), then 5 s a round: 30 s left are 6 more rounds, 9 in all, not 20.
    rounds = [{"epoch_seconds": 20.0}, {"epoch_seconds": 5.0}, {"epoch_seconds": 5.0}]
    state = LoopState({}, history=rounds, seconds=30.0)
    assert "9 rounds instead of 20" in replan(state, budget, training, schedule)
    assert state.planned_rounds == 9
    assert float(schedule(90)) == pytest.approx(0.001, rel=1e-3)  # the end of the new plan: min_lr_ratio x lr
    assert keras.ops.convert_to_numpy(schedule(40)) > keras.ops.convert_to_numpy(schedule(80))
    state.history.append({"epoch_seconds": 5.0})
    state.seconds = 35.0
    assert replan(state, budget, training, schedule) is None  # the same pace: the plan stands
    state.history.append({"epoch_seconds": 1.0})
    state.seconds = 36.0
    assert "20 rounds instead of 9" in replan(state, budget, training, schedule)  # faster: back to the budget's
    # A first round that compiled for most of a short budget: one more round to see the real pace, not an end.
    short = TrainingSettings(epochs=20, max_updates=0, train_minutes=6.0)
    first = LoopState({}, history=[{"epoch_seconds": 214.0}], seconds=214.0)
    assert "2 rounds instead of 20" in replan(first, budget, short, schedule)
    spent = LoopState({}, history=[{"epoch_seconds": 214.0}, {"epoch_seconds": 150.0}], seconds=364.0, planned_rounds=2)
    assert replan(spent, budget, short, schedule) is None  # the budget is spent: the plan ends with this round
    unlimited = TrainingSettings(epochs=20, max_updates=0, train_minutes=0)
    assert replan(LoopState({}, history=[{"epoch_seconds": 1e6}], seconds=1e6), budget, unlimited, schedule) is None


def test_early_stopping_ignores_gains_inside_the_noise():
    from model_lib.model.schedule import LoopState

    state = LoopState({})
    rule = TrainingSettings(early_stop_stderr=0.5)
    for epoch, score in enumerate([0.30, 0.305, 0.302, 0.306], start=1):
        track_early_stopping(state, epoch, score, 0.02, rule)
    assert state.waited == 3 and state.best_epoch == 4  # no gain beyond 0.01, yet the best weights are kept
    track_early_stopping(state, 5, 0.32, 0.02, rule)
    assert state.waited == 0 and state.reference_score == 0.32
    assert LoopState.from_json(state.to_json()) == state  # what a checkpoint stores and a resumed run reads


def test_personal_popularity_ranks_the_users_own_items_first():
    sequences = shoppers_and_explorers(100, 30, 10)
    sequences = sequences.subset(np.arange(50))  # the shoppers
    split = protocol_split(sequences)
    allowed = baselines.personal_popularity(split.train, split.test, 30, RepeatPolicy(ALLOW_REPEATS))
    assert allowed["mrr_10"] >= 1 / 3  # the target is always one of the 3 own items, ranked above every other one
    excluded = baselines.personal_popularity(split.train, split.test, 30)
    popular = baselines.most_popular(split.train, split.test, 30)
    assert excluded["hr_10"] == popular["hr_10"] == 0.0  # every target is a repeat


def test_item_knn_follows_co_occurrence():
    sequences = cycle_sequences(100, 20, 6)  # one hidden cycle: each item is always followed by the same item
    split = protocol_split(sequences)
    knn = baselines.item_knn(split.train, split.test, 20)
    assert knn["mrr_10"] > 0.9  # the last item's successor (its predecessor is seen, so excluded)
