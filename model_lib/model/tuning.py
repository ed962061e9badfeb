"""Hyper-parameter search (Optuna: TPE sampler, median pruning) on the validation target only.

Each trial trains the model with settings drawn from SEARCH_SPACE on the training part of the protocol split and
reports its validation NDCG@K after every validation round; a trial that is below the median of earlier trials at
the same round is pruned. The test target is never read: the search only ever sees `split.validation`.
The best settings are stored as JSON under data_dir/tuned/<name>.json; `reco_training` uses them when its `tuned`
param (RECO_TUNED) names them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from model_lib.config import LakeSettings, Settings, check_identifier
from model_lib.storage.lake import write_file_atomically

# name -> (kind, low, high) for floats / ints, or ("choice", options).
SEARCH_SPACE = {
    "learning_rate": ("log_float", 3e-4, 5e-3),
    "dropout": ("float", 0.0, 0.5),
    "embedding_dim": ("choice", [32, 64, 128]),
    "batch_size": ("choice", [32, 64, 128]),
    "warmup_share": ("float", 0.0, 0.1),
    "attention_blocks": ("choice", [0, 1, 2]),
    # Searched on the validation NDCG like the rest: a weight that hurts next-item ranking loses. It has no effect on
    # data with one event type (the head is not built there).
    "event_type_loss_weight": ("float", 0.0, 1.0),
}
TUNABLE = (*SEARCH_SPACE, "hidden_dim")


def suggest(trial) -> dict:
    """One trial's settings from SEARCH_SPACE (hidden_dim follows embedding_dim)."""
    chosen = {}
    for name, (kind, *bounds) in SEARCH_SPACE.items():
        if kind == "choice":
            chosen[name] = trial.suggest_categorical(name, bounds[0])
        else:
            chosen[name] = trial.suggest_float(name, bounds[0], bounds[1], log=kind == "log_float")
    chosen["hidden_dim"] = chosen["embedding_dim"]
    return chosen


def tuned_path(lake: LakeSettings, name: str) -> Path:
    return lake.data_dir / "tuned" / f"{check_identifier(name)}.json"


def save_best(path: Path, record: dict) -> None:
    """A reader sees the previous file or the new one (lake.write_file_atomically)."""
    write_file_atomically(path, lambda staged: staged.write_text(json.dumps(record, indent=2)))


def with_tuned(settings: Settings) -> Settings:
    """The settings with the stored best hyper-parameters of training.tuned applied (unchanged when empty)."""
    if not settings.training.tuned:
        return settings
    path = tuned_path(settings.lake, settings.training.tuned)
    if not path.exists():
        raise FileNotFoundError(f"no tuned settings named {settings.training.tuned!r} ({path}): run `reco tune` first")
    params = json.loads(path.read_text())["params"]
    unknown = sorted(set(params) - set(TUNABLE))
    if unknown:
        raise ValueError(f"{path} holds settings that are not tunable: {unknown}")
    return settings.updated(**params)


def search(
    settings: Settings,
    train_trial: Callable[[Settings, Callable[[int, dict], None]], float],
    minutes: float,
    trials: int,
    on_trial_end: Callable[[object, object], None] | None = None,
):
    """Runs the study within `minutes` (checked between trials) and at most `trials` trials -> the optuna Study.

    `train_trial(trial_settings, report)` trains one model, calling `report(round, record)` after every validation
    round, and returns the best validation NDCG@K.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=settings.training.seed, n_startup_trials=min(5, trials))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    metric = f"val_ndcg_{settings.training.eval_k}"

    def objective(trial) -> float:
        started = time.perf_counter()
        chosen = suggest(trial)

        def report(round_number: int, record: dict) -> None:
            trial.report(record[metric], round_number)
            if trial.should_prune():
                raise optuna.TrialPruned(f"round {round_number}: {record[metric]:.4f} below the median")

        value = train_trial(settings.updated(**chosen), report)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        return value

    callbacks = [on_trial_end] if on_trial_end else []
    study.optimize(objective, n_trials=trials, timeout=minutes * 60, callbacks=callbacks, gc_after_trial=True)
    return study
