"""Step 2 — train: the LSTM + attention next-item model on one day's sequences (TensorFlow), tracked in MLflow.

Reads   lake/sessionized/ds=D/sequences/ and vocab/
Writes  an MLflow run (params, per-epoch loss and validation metrics, training-curve picture, the test metrics of
        the model, most-popular and ALS on the same split as a table and a chart) and a new version of the
        registered model with alias `challenger`. Checkpoints go to data/checkpoints/train-ds=D/ while it runs: a
        killed run started again resumes there (same MLflow run), and they are removed once the model is registered.
Multi-worker: with TF_CONFIG set, every worker runs this same command; only the chief logs and registers.

Run as `python -m jobs.train --ds 2003-02-28` or `reco train --ds ...`. Promotion is the next step (jobs/promote.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from model_lib.config import SessionizedDay, Settings, get_settings, parse_ds
from model_lib.config.groups import HYPER_PARAMETERS
from model_lib.contracts import FIRST_ITEM_INDEX
from model_lib.data.sequence_files import read_sequences
from model_lib.data.splits import protocol_split
from model_lib.data.vocabulary import catalogue_items, catalogue_size
from model_lib.evaluation.report import (
    code_version,
    comparison_chart,
    data_window,
    metrics_table,
    model_card,
    training_curves,
)
from model_lib.model.checkpoints import resumable
from model_lib.model.distribute import cluster_position, tf_config
from model_lib.progress import say, stage
from model_lib.storage.lake import parquet_files, pinned, read_parquet_folder

TRAINING_PARAMS = (
    *HYPER_PARAMETERS,
    "epochs",
    "train_minutes",
    "patience",
    "min_item_count",
    "session_gap_minutes",
    "tuned",
)


def run(settings: Settings, ds: dt.date) -> dict:
    from model_lib.model import tuning

    # The hyper-parameters `reco tune` stored under the name training.tuned, if one is named.
    settings = tuning.with_tuned(settings)

    # One committed version of the day, for the whole run: the nightly run may re-sessionize the same day meanwhile.
    with pinned(settings.lake.sessionized_dir(ds), SessionizedDay.READ_PARTS) as pin:
        return train_pinned_day(settings, ds, SessionizedDay(pin))


def train_pinned_day(settings: Settings, ds: dt.date, day: SessionizedDay) -> dict:
    from model_lib.model import training

    # --- extract ---
    with stage(f"train ds={ds}: read sequences") as report:
        files = parquet_files(day.sequences)
        vocabulary = read_parquet_folder(day.vocab)
        num_items = catalogue_size(vocabulary)
        sequences = read_sequences(files)
        split = protocol_split(sequences, settings.sessionize.seq_len)
        report(files=len(files), users=len(split.train), items=num_items - 2, held_out=len(split.test.targets))
    if len(split.test.targets) == 0:
        raise ValueError(f"no user in ds={ds} has the 3 events a leave-one-out hold-out needs")

    checkpoint_dir = settings.lake.checkpoint_dir(ds)
    _, workers, is_chief = cluster_position(tf_config())
    if not is_chief:
        # Another worker of a multi-worker run: train in step with the chief, which alone logs and registers.
        with stage(f"train: worker of {workers}") as report:
            result = training.train_next_item_model(
                files, num_items, settings, checkpoint_dir, validation=split.validation
            )
            report(epochs=len(result.history), best_epoch=result.best_epoch)
        return {"ds": ds.isoformat(), "worker": True, "epochs": len(result.history)}
    return _train_and_register(settings, ds, files, vocabulary, num_items, sequences, split, checkpoint_dir)


def _train_and_register(settings, ds, files, vocabulary, num_items, sequences, split, checkpoint_dir: Path) -> dict:
    import mlflow

    from model_lib.model import training
    from model_lib.serving import registry
    from model_lib.serving.recommender import Recommender
    from model_lib.storage.spark import spark_session

    client = registry.configure(settings)
    # A retry after a crash continues the same MLflow run, as training continues from its checkpoint.
    run_id_file = checkpoint_dir / "mlflow_run_id"
    signature = training.run_signature(settings, num_items, files)
    resume_run = run_id_file.read_text().strip() if resumable(checkpoint_dir, signature) else None
    with mlflow.start_run(run_id=resume_run, run_name=None if resume_run else f"train-{ds}") as run:
        if not resume_run:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            run_id_file.write_text(run.info.run_id)
            _log_params(settings, ds, files, num_items, split)
        # --- transform: train, then test on the held-out last event of every user ---
        result = _fit(settings, files, num_items, split, checkpoint_dir)
        recommender = Recommender(result.model, vocabulary, settings.sessionize.event_types, settings.repeat_rule())
        spark = spark_session(settings.engines, f"reco-train-{ds}")
        try:
            results = _test_with_baselines(settings, spark, result, split, num_items, catalogue_items(vocabulary))
            next_type = _test_next_type(settings, result, split)
            _fit_segments(settings, spark, recommender, sequences)
        finally:
            spark.stop()
        # --- load: metrics, pictures, the model, the registry ---
        window = data_window(sequences.times)
        version = _log_and_register(settings, ds, window, recommender, split, num_items, client, run, result, results)
    # Registered: a re-run of this ds trains afresh instead of resuming a finished run.
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    summary = {
        "ds": ds.isoformat(),
        "run_id": run.info.run_id,
        "version": version,
        "test": results[MODEL],
        "baselines": {name: metrics for name, metrics in results.items() if name != MODEL},
        "next_event_type": next_type,
        "train_seconds": round(result.seconds, 1),
        "validation_rounds": len(result.history),
        "resumed_after_epoch": result.resumed_after_epoch,
    }
    say(f"train summary {json.dumps(summary)}")
    return summary


MODEL = "LSTM + attention"  # the model's row among the baselines in the metrics table and the chart


def _log_params(settings: Settings, ds: dt.date, files: list[Path], num_items: int, split) -> None:
    import mlflow

    mlflow.log_params(
        {
            **settings.pick(TRAINING_PARAMS),
            "ds": ds.isoformat(),
            "users": len(split.train),
            "items": num_items - FIRST_ITEM_INDEX,
            "sequence_files": len(files),
            "sampled_softmax": settings.model.uses_sampled_softmax(num_items),
        }
    )
    mlflow.set_tags({"ds": ds.isoformat(), "code_version": code_version()})


def _fit(settings: Settings, files: list[Path], num_items: int, split, checkpoint_dir: Path):
    """The training loop, each validation round's record logged to MLflow as it ends."""
    import mlflow

    from model_lib.model import training

    def log_epoch(epoch: int, record: dict[str, float]) -> None:
        mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)

    with stage("train: fit next-item model") as report:
        result = training.train_next_item_model(
            files,
            num_items,
            settings,
            checkpoint_dir=checkpoint_dir,
            on_epoch_end=log_epoch,
            validation=split.validation,
        )
        report(
            epochs=len(result.history),
            best_epoch=result.best_epoch,
            resumed_after_epoch=result.resumed_after_epoch,
            strategy=result.strategy,
            replicas=result.replicas,
            seq_per_s=round(result.sequences_per_second),
        )
    mlflow.set_tags({"strategy": result.strategy, "replicas": str(result.replicas)})
    return result


def _test_with_baselines(settings: Settings, spark, result, split, num_items: int, items: int) -> dict[str, dict]:
    """The model and every baseline on the test hold-out, under the same repeat policy (ALS on `spark` when
    RECO_ALS_BASELINE); coverage over the vocabulary's `items`."""
    from model_lib.evaluation import baselines
    from model_lib.model import training

    with stage("train: test metrics and baselines") as report:
        policy = settings.repeat_rule()
        model = training.evaluate_model(result.model, split.test, num_items, policy=policy, catalogue_items=items)
        als_spark = spark if settings.training.als_baseline else None
        results = {
            MODEL: model,
            **baselines.all_baselines(als_spark, split, num_items, settings, catalogue_items=items),
        }
        report(**{f"{name} ndcg_10": metrics["ndcg_10"] for name, metrics in results.items()})
    return results


def _test_next_type(settings: Settings, result, split) -> dict[str, dict]:
    """With the event-type head: the test hold-out's next event type by the model and by the majority-type and
    last-type baselines (accuracy, log-loss, AUC per type), logged as test_next_type_* metrics."""
    import mlflow

    from model_lib.evaluation import next_behaviour
    from model_lib.model.scoring import type_probabilities

    results = next_behaviour.compare(type_probabilities(result.model), split, settings.sessionize.event_types)
    for name, metrics in results.items():
        prefix = "test_next_type" if name == next_behaviour.MODEL else f"{name.split()[0]}_type_test"
        mlflow.log_metrics({f"{prefix}_{key}": value for key, value in metrics.items()})
        say(
            f"next event type, {name}: accuracy {metrics['accuracy']:.4f}, log-loss {metrics['log_loss']:.4f}"
            + "".join(f", {key.upper()} {value:.4f}" for key, value in metrics.items() if key.startswith("auc_"))
        )
    return results


def _fit_segments(settings: Settings, spark, recommender, sequences) -> None:
    """The version's user segments (serving/profiles.py) over every user's vector, with the segments picture and
    table logged to the run: what the nightly user_profiles and user_segments tables assign users to."""
    import mlflow

    from model_lib.evaluation.report import segments_picture
    from model_lib.serving import profiles

    with stage("train: user segments (KMeans over the users' vectors)") as report:
        titles_file = settings.lake.items_dir / "items.parquet"
        titles = pd.read_parquet(titles_file) if titles_file.exists() else None
        rules = profiles.SegmentRules(settings.serving.profile_segments, settings.training.seed)
        points = profiles.segments_of_model(spark, recommender, sequences, settings.sessionize.seq_len, rules, titles)
        described = pd.DataFrame(recommender.segments.described)
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(str(segments_picture(points, described, Path(tmp) / "user_segments.png")))
        mlflow.log_table(described.astype({"top_item_ids": str}), artifact_file="user_segments.json")
        report(users=len(sequences), segments=len(described))


def _log_and_register(settings, ds, window, recommender, split, num_items, client, run, result, results) -> int:
    """Test metrics, the metrics table, curves, chart and model card to the MLflow run; the recommender registered
    as a new version with alias challenger. Returns the version."""
    import mlflow

    from model_lib.evaluation import baselines
    from model_lib.serving import registry

    test = results[MODEL]
    mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
    for name, prefix in baselines.METRIC_PREFIXES.items():
        if name in results:
            mlflow.log_metrics({f"{prefix}_test_{k}": v for k, v in results[name].items()})
    mlflow.log_metrics({"train_seconds": result.seconds, "best_epoch": result.best_epoch})
    table = metrics_table(results)
    mlflow.log_table(table, artifact_file="test_metrics_table.json")
    with tempfile.TemporaryDirectory() as tmp, stage("train: log + register model") as report:
        mlflow.log_artifact(
            str(training_curves(result.history, settings.training.eval_k, Path(tmp) / "training_curves.png"))
        )
        documents = {
            "test_comparison": comparison_chart(results, Path(tmp) / "test_comparison.png"),
            "model_card": model_card(
                settings, ds, window, table, len(split.train), num_items, Path(tmp) / "model_card.md"
            ),
        }
        for path in documents.values():
            mlflow.log_artifact(str(path))
        model_uri = registry.log_recommender(recommender, settings, documents)
        version = registry.register(
            client,
            model_uri,
            settings,
            tags={
                "ds": ds.isoformat(),
                "data_window": window,
                # The vocabulary travels inside the model; this says which lake version it is.
                "vocabulary": f"lake/sessionized/ds={ds.isoformat()}/vocab ({len(recommender.index_of):,} items)",
                "run_id": run.info.run_id,
                **{f"test_{name}": f"{test[name]:.5f}" for name in ("hr_10", "ndcg_10", "coverage_20")},
                "code_version": code_version(),
            },
        )
        report(model=settings.model.model_name, version=version, alias=registry.CHALLENGER)
    return version


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--epochs", type=int, default=0, help="override RECO_EPOCHS (0: keep the setting)")
    parser.add_argument(
        "--result-file", type=Path, help="also write the summary here as JSON (a pod's /airflow/xcom/return.json)"
    )
    args = parser.parse_args(argv)
    summary = run(get_settings(**({"epochs": args.epochs} if args.epochs else {})), parse_ds(args.ds))
    if args.result_file:
        args.result_file.parent.mkdir(parents=True, exist_ok=True)
        args.result_file.write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
