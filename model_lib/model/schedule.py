"""The training budget and its schedule: validation rounds of optimizer updates, the learning rate (linear
warm-up, then cosine decay), the time budget, and noise-aware early stopping over the loop state that checkpoints
carry.

The budget follows the data: `epochs` passes over the training windows, at most `max_updates` updates (0: no cap),
validated once per pass but at most MAX_VALIDATIONS times (or every `eval_every_updates`). A large data set is
capped by the updates, a small one by the passes; early stopping (`patience` rounds, a third of a full plan) ends
either once validation stops improving. The time budget (`train_minutes`) then shortens the plan once the
first rounds have shown how long a round takes here, and the cosine schedule is re-planned to end with it, so a run
cut short by time still ends at a low learning rate.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from model_lib.config import TrainingSettings
from model_lib.progress import say

# Validation rounds of a plan validated "once per pass": a small data set is validated every few passes instead, so
# validation never costs more than 25 passes over the hold-out, and `patience` rounds stay a share of the plan.
MAX_VALIDATIONS = 25


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
        total = training.epochs * steps_per_pass
        if training.max_updates:
            total = min(total, training.max_updates)
        per_round = min(training.eval_every_updates or max(steps_per_pass, -(-total // MAX_VALIDATIONS)), total)
        if max_steps_per_round:
            per_round = min(per_round, max_steps_per_round)
        return cls(max(1, -(-total // per_round)), max(1, per_round), steps_per_pass)

    @property
    def total_updates(self) -> int:
        return self.rounds * self.steps_per_round

    def describe(self) -> str:
        return (
            f"{self.total_updates:,} updates ({self.total_updates / max(self.steps_per_pass, 1):.1f} passes over "
            f"the data) validated every {self.steps_per_round}"
        )


def learning_rate_schedule(training: TrainingSettings, total_updates: int):
    """Linear warm-up, then cosine decay to min_lr_ratio x learning_rate at the end of the budget (a
    `planned_cosine` whose end the time budget may move), or a constant."""
    if training.lr_schedule == "constant":
        return training.learning_rate
    return planned_cosine(training.learning_rate, total_updates, training.warmup_share, training.min_lr_ratio)


def planned_cosine(peak: float, total_updates: int, warmup_share: float, min_ratio: float):
    """lr(step) = linear from min_ratio x peak to peak over the first warmup_share of the plan, then
    peak x (min_ratio + (1 - min_ratio) (1 + cos(pi progress)) / 2) to the plan's end; `.planned_updates` is a
    variable, so the plan can be shortened while training runs (`replan`)."""
    import math

    import keras
    from keras import ops

    class PlannedCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self):
            self.planned_updates = keras.Variable(float(total_updates), trainable=False, name="planned_updates")

        def __call__(self, step):
            step = ops.cast(step, "float32")
            total = ops.maximum(self.planned_updates, 1.0)
            warmup = warmup_share * total
            low = peak * min_ratio
            warming = low + (peak - low) * step / ops.maximum(warmup, 1.0)
            progress = ops.clip((step - warmup) / ops.maximum(total - warmup, 1.0), 0.0, 1.0)
            decayed = peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + ops.cos(math.pi * progress)))
            return ops.where(step < warmup, warming, decayed)

        def get_config(self):
            return {"peak": peak, "total_updates": total_updates, "warmup_share": warmup_share, "min_ratio": min_ratio}

    return PlannedCosine()


def replan(state: LoopState, budget: TrainingBudget, training: TrainingSettings, schedule) -> str | None:
    """After a round: the rounds that fit in `train_minutes` at the pace of the last round (never fewer than done,
    never more than the budget's), and the learning rate schedule's end moved with them. The first round also
    compiles, so a plan it cut grows back once later rounds show the real pace. -> a line saying so, or None."""
    done = len(state.history)
    if state.planned_rounds is None:
        state.planned_rounds = budget.rounds
    planned = state.planned_rounds
    if not training.train_minutes or not done:
        return None
    pace = max(state.history[-1]["epoch_seconds"], 1e-9)
    left = training.train_minutes * 60 - state.seconds
    # While time is left, at least one more round: the first round's pace includes its compiling, and a plan cut on
    # it alone would end a short budget after that round (the demo's 6 minutes: 1 round of 25).
    fitting = done + (max(1, int(left / pace)) if left > 0 else 0)
    if max(done, min(budget.rounds, fitting)) == planned:
        return None
    state.planned_rounds = max(done, min(budget.rounds, fitting))
    set_plan(schedule, state.planned_rounds * budget.steps_per_round)
    minutes, rounds = training.train_minutes, state.planned_rounds
    return f"time budget {minutes:g} min: {rounds} rounds instead of {planned} at {pace:.0f}s a round"


def set_plan(schedule, total_updates: int) -> None:
    """Moves a planned_cosine's end (a constant learning rate has none)."""
    if hasattr(schedule, "planned_updates"):
        schedule.planned_updates.assign(float(total_updates))


def stop_early(state: LoopState, training: TrainingSettings) -> bool:
    """True (and a line saying why) once `patience` validations passed without a real gain."""
    if state.waited < training.patience:
        return False
    say(
        f"early stop: {state.waited} validations without a NDCG@{training.eval_k} gain of more than "
        f"{training.early_stop_stderr} standard errors over {state.reference_score:.4f}",
    )
    return True


def validation_score(validation_metrics: dict, training: TrainingSettings) -> tuple[float, float]:
    """The early-stopping target and its standard error: NDCG@eval_k."""
    k = training.eval_k
    return validation_metrics[f"ndcg_{k}"], validation_metrics[f"ndcg_{k}_stderr"]


def track_early_stopping(state: LoopState, epoch: int, score: float, stderr: float, training: TrainingSettings) -> bool:
    """Updates the loop state with one validation; True when it is the best so far, ties included (its weights are
    kept).

    The patience counter restarts only when the score beats the reference (the score at the last restart) by
    more than early_stop_stderr standard errors: noise on a small validation set does not keep a run alive, and
    slow real gains add up until they count.
    """
    # A tie goes to the later round: the same ranking, trained longer (the next-event-type head too).
    improved = score >= state.best_score
    if improved:
        state.best_score, state.best_epoch = score, epoch
    if score > state.reference_score + training.early_stop_stderr * stderr:
        state.reference_score, state.waited = score, 0
    else:
        state.waited += 1
    return improved


@dataclass
class LoopState:
    """Where a training run stands after each round (checkpointed as JSON, so a killed run resumes from it).

    `signature`: what must match for a checkpoint to be resumed; `history`: one record per validation round (loss,
    learning rate, seconds, val_* metrics); the best validation score and its round; the early-stopping reference
    (the score at the last restart of the patience counter) and the rounds waited since; seconds trained so far;
    the rounds planned (re-planned by the time budget)."""

    signature: dict
    history: list[dict] = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = 0
    reference_score: float = -1.0
    waited: int = 0
    seconds: float = 0.0
    planned_rounds: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoopState:
        return cls(**json.loads(text))
