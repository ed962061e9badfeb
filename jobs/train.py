"""Step 2 — train: the LSTM + attention next-item model on one day's sequences (TensorFlow), tracked in MLflow.

Reads   lake/sequences/ds=D/, lake/vocab/ds=D/
Writes  an MLflow run (params, per-epoch loss and validation metrics, training-curve picture, test metrics and the
        most-popular baseline on the same split) and a new version of the registered model with alias `challenger`.

Run as `python -m jobs.train --ds 2003-02-28` or `reco train --ds ...`. Promotion is the next step (jobs/promote.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from model_lib.config import PROJECT_ROOT, Settings, get_settings, parse_ds
from model_lib.lake import read_parquet_folder, read_sequences
from model_lib.metrics import evaluate_holdout, popularity_scores
from model_lib.progress import stage
from model_lib.schemas import FIRST_ITEM_INDEX
from model_lib.splits import leave_one_out


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on servers and workers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: list[dict[str, float]], k: int, path: Path) -> Path:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["loss"] for h in history], marker="o")
    left.set(title="training loss (masked cross-entropy)", xlabel="epoch")
    right.plot(epochs, [h[f"val_hr_{k}"] for h in history], marker="o", label=f"HR@{k}")
    right.plot(epochs, [h[f"val_ndcg_{k}"] for h in history], marker="o", label=f"NDCG@{k}")
    right.set(title="validation (full ranking, seen excluded)", xlabel="epoch")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def comparison_chart(model: dict[str, float], baseline: dict[str, float], path: Path) -> Path:
    """Bar chart of the model against the most-popular baseline on the same test split."""
    plt = _pyplot()
    names = [name for name in ("hr_10", "ndcg_10", "mrr_10", "hr_20", "ndcg_20", "coverage_20") if name in model]
    positions = np.arange(len(names))
    figure, axes = plt.subplots(figsize=(9, 4))
    axes.bar(positions - 0.2, [model[n] for n in names], 0.4, label="LSTM + attention")
    axes.bar(positions + 0.2, [baseline[n] for n in names], 0.4, label="most popular")
    axes.set_xticks(positions, [n.replace("_", "@") for n in names])
    axes.set(title="test metrics, leave-one-out, full ranking, seen items excluded")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(settings: Settings, ds: dt.date) -> dict:
    import mlflow

    from model_lib import registry
    from model_lib.scoring import Recommender
    from model_lib.training import evaluate_model, train_next_item_model

    # --- extract ---
    with stage(f"train ds={ds}: read sequences") as report:
        sequences = read_sequences(settings.sequences_dir(ds))
        vocabulary = read_parquet_folder(settings.vocab_dir(ds))
        num_items = int(vocabulary["item_index"].max()) + 1 if len(vocabulary) else FIRST_ITEM_INDEX
        split = leave_one_out(sequences)
        report(users=len(sequences), items=num_items - FIRST_ITEM_INDEX, held_out=len(split.test.targets))
    if len(split.test.targets) == 0:
        raise ValueError(f"no user in ds={ds} has the 3 events a leave-one-out hold-out needs")

    client = registry.configure(settings)
    params = {
        key: getattr(settings, key)
        for key in (
            "seq_len",
            "embedding_dim",
            "hidden_dim",
            "lstm_layers",
            "dropout",
            "learning_rate",
            "batch_size",
            "epochs",
            "patience",
            "seed",
            "min_item_count",
            "session_gap_minutes",
        )
    }
    with mlflow.start_run(run_name=f"train-{ds}") as run:
        mlflow.log_params({**params, "ds": ds.isoformat(), "users": len(sequences), "items": num_items - 2})
        mlflow.set_tags({"ds": ds.isoformat(), "code_version": code_version()})

        # --- transform: train, then test on the held-out last event of every user ---
        def log_epoch(epoch: int, record: dict[str, float]) -> None:
            mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)

        with stage("train: fit next-item model") as report:
            result = train_next_item_model(split, num_items, settings, on_epoch_end=log_epoch)
            report(
                epochs=len(result.history), best_epoch=result.best_epoch, seq_per_s=round(result.sequences_per_second)
            )
        with stage("train: test metrics") as report:
            test = evaluate_model(result.model, split.test, num_items)
            popular = popularity_scores(split.train.items, num_items)
            baseline = evaluate_holdout(
                lambda batch: np.broadcast_to(popular, (len(batch["items"]), num_items)),
                split.test.inputs.model_inputs(),
                split.test.inputs.older_items,
                split.test.targets,
                num_items,
            )
            report(
                **{f"test_{k}": v for k, v in test.items() if k.startswith(("hr_10", "ndcg_10"))},
                popular_ndcg_10=baseline["ndcg_10"],
            )

        # --- load: metrics, pictures, the model, the registry ---
        mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
        mlflow.log_metrics({f"popular_test_{k}": v for k, v in baseline.items()})
        mlflow.log_metrics({"train_seconds": result.seconds, "best_epoch": result.best_epoch})
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(
                str(training_curves(result.history, settings.eval_k, Path(tmp) / "training_curves.png"))
            )
            mlflow.log_artifact(str(comparison_chart(test, baseline, Path(tmp) / "test_comparison.png")))
            (Path(tmp) / "test_metrics.json").write_text(
                json.dumps({"model": test, "most_popular": baseline}, indent=2)
            )
            mlflow.log_artifact(str(Path(tmp) / "test_metrics.json"))
        recommender = Recommender(result.model, vocabulary, settings.event_types)
        with stage("train: log + register model") as report:
            model_uri = registry.log_recommender(recommender, settings)
            version = registry.register(
                client,
                model_uri,
                settings,
                tags={
                    "ds": ds.isoformat(),
                    # The vocabulary travels inside the model; this says which lake version it is.
                    "vocabulary": f"lake/vocab/ds={ds.isoformat()} ({len(vocabulary):,} items)",
                    "run_id": run.info.run_id,
                    "test_ndcg_10": f"{test['ndcg_10']:.5f}",
                    "test_hr_10": f"{test['hr_10']:.5f}",
                    "code_version": code_version(),
                },
            )
            report(model=settings.model_name, version=version, alias=registry.CHALLENGER)
    summary = {
        "ds": ds.isoformat(),
        "run_id": run.info.run_id,
        "version": version,
        "test": test,
        "most_popular": baseline,
        "train_seconds": round(result.seconds, 1),
    }
    print(f"[reco] train summary {json.dumps(summary)}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True)
    args = parser.parse_args(argv)
    return run(get_settings(), parse_ds(args.ds))


if __name__ == "__main__":
    main()
