"""Training-speed benchmark: one pass of training updates and the validation pass, before and after compiling it.

    reco bench training_speed [--root data/bench/accuracy/ml-1m] [--updates 100]

Reads the sequences the accuracy benchmark sessionized under --root (run `reco bench accuracy --dataset ml-1m`
first), with the shipped settings (any RECO_* variable changes them). In one run, on the same model and users:
  train      seconds per optimizer update (the XLA-compiled step), and so per pass over the training windows
  validation eager: the forward pass run op by op through Keras, as the per-epoch validation used to;
             compiled: scoring.ModelScorer (XLA, the serving path) — both ranked by the one metrics module
  epoch      one pass of updates + one validation, before (eager) and after (compiled), and their ratio
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from bench import results
from model_lib.config import PROJECT_ROOT, get_settings
from model_lib.data.vocabulary import catalogue_size


def eager_validation(model, holdout, num_items: int, k: int, policy) -> dict:
    """The validation pass as it was: Keras forward pass op by op, item logits, the shared metrics."""
    from model_lib.contracts import PAD_INDEX
    from model_lib.evaluation.metrics import evaluate_holdout

    sequences = holdout.inputs
    order = np.argsort(sequences.lengths, kind="stable")
    inputs = {name: values[order] for name, values in sequences.model_inputs().items()}

    def score(batch):
        width = max(1, int((batch["items"] != PAD_INDEX).sum(axis=1).max()))
        vectors = model.encode_last({name: np.asarray(v[:, -width:], np.int32) for name, v in batch.items()})[0]
        return np.asarray(model.item_logits(vectors))

    older = [sequences.older_items[i] for i in order]
    return evaluate_holdout(score, inputs, older, holdout.targets[order], num_items, (k,), policy=policy)


def run(settings, updates: int) -> dict:
    from model_lib.data.sequence_files import read_sequences
    from model_lib.data.splits import protocol_split
    from model_lib.model.examples import TrainingRows
    from model_lib.model.scoring import ModelScorer
    from model_lib.model.training import evaluate_model, train_next_item_model
    from model_lib.storage.lake import dated_folders, parquet_files, read_parquet_folder

    days = dated_folders(settings.lake.sessionized_root, "ds", dt.date.max)
    if not days:
        raise FileNotFoundError(
            f"no sessionized day under {settings.lake.sessionized_root}: run reco bench accuracy first"
        )
    ds = days[-1][0]
    files = parquet_files(settings.lake.sequences_dir(ds))
    num_items = catalogue_size(read_parquet_folder(settings.lake.vocab_dir(ds)))
    split = protocol_split(read_sequences(files), settings.sessionize.seq_len)
    windows = len(TrainingRows.from_sequences(split.train, settings.sessionize.seq_len, settings.stride))
    steps_per_pass = -(-windows // settings.training.batch_size)
    # Two rounds: the first compiles the train step for each batch width, the second is timed.
    budget = settings.updated(max_updates=2 * updates, eval_every_updates=updates)
    started = time.perf_counter()
    trained = train_next_item_model(files, num_items, budget, verbose=0, validation=split.validation)
    round_seconds = trained.history[1]["epoch_seconds"]
    policy, k = settings.repeat_rule(), settings.training.eval_k
    # Steady-state validation cost: each path once to compile / warm up, then timed.
    eager_validation(trained.model, split.validation, num_items, k, policy)
    clock = time.perf_counter()
    eager = eager_validation(trained.model, split.validation, num_items, k, policy)
    eager_seconds = time.perf_counter() - clock
    scorer = ModelScorer(trained.model)
    evaluate_model(trained.model, split.validation, num_items, (k,), policy, scorer)
    clock = time.perf_counter()
    compiled = evaluate_model(trained.model, split.validation, num_items, (k,), policy, scorer)
    compiled_seconds = time.perf_counter() - clock
    # The timed round includes its validation: take the steady-state validation off.
    update_seconds = max(round_seconds - compiled_seconds, 0.0) / updates
    train_pass = update_seconds * steps_per_pass
    return {
        "bench": "training_speed",
        "dataset": settings.lake.data_dir.name,
        "ds": ds.isoformat(),
        "seq_len": settings.sessionize.seq_len,
        "windows": windows,
        "steps_per_pass": steps_per_pass,
        "seconds_per_update": round(update_seconds, 3),
        "train_pass_seconds": round(train_pass, 1),
        "validation_users": len(split.validation.targets),
        "validation_eager_seconds": round(eager_seconds, 1),
        "validation_compiled_seconds": round(compiled_seconds, 1),
        "same_metrics": bool(abs(eager[f"ndcg_{k}"] - compiled[f"ndcg_{k}"]) < 1e-4),
        "epoch_before_seconds": round(train_pass + eager_seconds, 1),
        "epoch_after_seconds": round(train_pass + compiled_seconds, 1),
        "validation_speedup": round(eager_seconds / max(compiled_seconds, 1e-9), 2),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="reco bench training_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / "data" / "bench" / "accuracy" / "ml-1m")
    parser.add_argument("--updates", type=int, default=100, help="updates per round (two rounds; the second is timed)")
    results.add_arguments(parser, "training_speed")
    args = parser.parse_args(argv)
    settings = get_settings(data_dir=args.root)
    result = run(settings, args.updates)
    print(json.dumps(result), flush=True)
    results.keep(result, args)
    return result


if __name__ == "__main__":
    main()
