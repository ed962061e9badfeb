"""Hyper-parameter search for `reco_training` on one day's sequences, with the validation target only.

Reads   lake/sessionized/ds=D/sequences/ and vocab/
Writes  an MLflow run `tune-<name>` with one child run per trial (its settings, validation NDCG per round, whether
        it was pruned) and the best settings to data_dir/tuned/<name>.json, which `reco_training` applies when its
        `tuned` param (RECO_TUNED) is <name>.

Run as `reco tune --ds 2003-02-28 --name ml-1m --minutes 60 --trials 20`; search space and pruning in
model_lib/model/tuning.py. Each trial trains under the settings' budget (RECO_MAX_UPDATES ...).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from model_lib.config import Settings, check_identifier, get_settings, parse_ds
from model_lib.data.sequence_files import read_sequences
from model_lib.data.splits import protocol_split
from model_lib.data.vocabulary import catalogue_size
from model_lib.progress import say, stage
from model_lib.storage.lake import parquet_files, read_parquet_folder


def trial_trainer(files: list, num_items: int, validation, eval_k: int):
    """-> train_trial(trial_settings, report): one trial as a child MLflow run; returns its best validation NDCG
    and reports every round to the pruner."""
    import mlflow
    import optuna

    from model_lib.model import tuning
    from model_lib.model.training import train_next_item_model

    def train_trial(trial_settings: Settings, report) -> float:
        with mlflow.start_run(run_name="trial", nested=True):
            mlflow.log_params(trial_settings.pick(tuning.TUNABLE))

            def log_round(round_number: int, record: dict) -> None:
                mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=round_number)
                report(round_number, record)

            try:
                result = train_next_item_model(
                    files, num_items, trial_settings, on_epoch_end=log_round, verbose=0, validation=validation
                )
            except optuna.TrialPruned:
                mlflow.set_tag("trial_state", "pruned")
                raise
            except Exception:
                mlflow.set_tag("trial_state", "failed")
                raise
            best = max(h[f"val_ndcg_{eval_k}"] for h in result.history)
            mlflow.set_tag("trial_state", "complete")
            mlflow.log_metric("best_val_ndcg", best)
            return best

    return train_trial


def run(settings: Settings, ds: dt.date, name: str, minutes: float, trials: int) -> dict:
    import mlflow

    from model_lib.model import tuning
    from model_lib.serving import registry

    check_identifier(name)
    # --- extract: the day's sequences; only the validation hold-out is ever scored ---
    files = parquet_files(settings.lake.sequences_dir(ds))
    num_items = catalogue_size(read_parquet_folder(settings.lake.vocab_dir(ds)))
    validation = protocol_split(read_sequences(files), settings.sessionize.seq_len).validation
    registry.configure(settings)

    # --- transform: the study, one child run per trial ---
    train_trial = trial_trainer(files, num_items, validation, settings.training.eval_k)

    def progress(study, trial) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        say(f"tune {name}: trial {trial.number} {trial.state.name.lower()} value={value}")

    with mlflow.start_run(run_name=f"tune-{name}") as parent, stage(f"tune {name} on ds={ds}") as report:
        mlflow.set_tags({"ds": ds.isoformat(), "tuned_name": name})
        study = tuning.search(settings, train_trial, minutes, trials, progress)
        finished = [t for t in study.trials if t.state.name == "COMPLETE"]
        if not finished:
            raise RuntimeError(f"no trial of {name} finished within {minutes} min: give it more time")
        record = {
            "name": name,
            "ds": ds.isoformat(),
            "params": {**study.best_params, "hidden_dim": study.best_params["embedding_dim"]},
            "best_val_ndcg": study.best_value,
            "trials": len(study.trials),
            "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
            "mlflow_run_id": parent.info.run_id,
        }
        mlflow.log_params({f"best_{k}": v for k, v in record["params"].items()})
        mlflow.log_metric("best_val_ndcg", study.best_value)
        report(trials=record["trials"], pruned=record["pruned"], best_val_ndcg=round(study.best_value, 4))

    # --- load: the best settings, where reco_training finds them ---
    tuning.save_best(tuning.tuned_path(settings.lake, name), record)
    say(f"tune summary {json.dumps(record)}")
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--name", required=True, help="the data set's name: reco_training's `tuned` param")
    parser.add_argument("--minutes", type=float, default=60.0, help="time budget, checked between trials")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)
    return run(get_settings(), parse_ds(args.ds), args.name, args.minutes, args.trials)


if __name__ == "__main__":
    main()
