"""The training budget and its schedule: validation rounds of optimizer updates, the learning rate (linear
warm-up, then cosine decay) and noise-aware early stopping over the loop state that checkpoints carry."""

from __future__ import annotations

from dataclasses import dataclass

from model_lib.config import TrainingSettings


@dataclass(frozen=True)
class TrainingBudget:
    """`rounds` validation rounds of `steps_per_round` optimizer updates each."""

    rounds: int
    steps_per_round: int
    steps_per_pass: int

    @classmethod
    def of(
        cls, training: TrainingSettings, steps_per_pass: int, max_steps_per_round: int | None = None
    ) -> TrainingBudget:
        per_round = training.eval_every_updates or steps_per_pass
        if max_steps_per_round:
            per_round = min(per_round, max_steps_per_round)
        rounds = -(-training.max_updates // per_round) if training.max_updates else training.epochs
        return cls(rounds, per_round, steps_per_pass)

    @property
    def total_updates(self) -> int:
        return self.rounds * self.steps_per_round

    def describe(self) -> str:
        return (
            f"{self.total_updates:,} updates ({self.total_updates / max(self.steps_per_pass, 1):.1f} passes over "
            f"the data) validated every {self.steps_per_round}"
        )


def learning_rate_schedule(training: TrainingSettings, total_updates: int):
    """Linear warm-up, then cosine decay to min_lr_ratio x learning_rate at the end of the budget (or constant)."""
    import keras

    if training.lr_schedule == "constant":
        return training.learning_rate
    warmup = int(training.warmup_share * total_updates)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=training.learning_rate * training.min_lr_ratio,
        decay_steps=max(1, total_updates - warmup),
        alpha=training.min_lr_ratio,
        warmup_target=training.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def track_early_stopping(state: dict, epoch: int, score: float, stderr: float, training: TrainingSettings) -> bool:
    """Updates the loop state with one validation; True when it is the best so far (its weights are kept).

    The patience counter restarts only when the score beats the reference (the score at the last restart) by
    more than early_stop_stderr standard errors: noise on a small validation set does not keep a run alive, and
    slow real gains add up until they count.
    """
    improved = score > state["best_score"]
    if improved:
        state.update(best_score=score, best_epoch=epoch)
    if score > state.get("reference_score", -1.0) + training.early_stop_stderr * stderr:
        state.update(reference_score=score, waited=0)
    else:
        state["waited"] += 1
    return improved


def new_loop_state(signature: dict) -> dict:
    """The loop state a run starts from (checkpointed as JSON after every round)."""
    return {
        "signature": signature,
        "history": [],
        "best_score": -1.0,
        "best_epoch": 0,
        "reference_score": -1.0,
        "waited": 0,
        "seconds": 0.0,
    }
