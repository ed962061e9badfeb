"""Accuracy benchmark: the LSTM + attention model against most-popular and Spark ALS, one JSON line.

    reco bench accuracy --dataset ml-1m          # MovieLens-1M (installed at set-up), converted to raw events
    reco bench accuracy --events DIR             # any raw-event folder (dt=YYYY-MM-DD/*.jsonl[.gz])

Protocol (the published one for ML-1M): every event is an interaction; the real sessionize job (Spark, full
rebuild up to the last day) builds each user's history ordered by time, ties kept in input order; items with
fewer than `min_item_count` (5) interactions are dropped once (splits.protocol_split); leave-one-out; full ranking
over all items with the user's seen items excluded (model_lib/metrics.py). Early stopping and every choice of
hyper-parameters use the validation target only; the test target is scored once at the end. ML-1M gives 6,040
users and 3,416 items.

Everything is written under --root (default data/bench/accuracy/<name>); RECO_* variables set the model's
hyper-parameters (the defaults below are the benchmark's: sequence length 200, as in SASRec's ML-1M setup).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from model_lib.config import PROJECT_ROOT, get_settings
from model_lib.progress import stage
from model_lib.training import HYPER_PARAMETERS

REFERENCE = {
    "measured_here": {"most_popular": {"hr_10": 0.037, "ndcg_10": 0.018}, "als": {"hr_10": 0.098, "ndcg_10": 0.049}},
    "published": {
        "SASRec_full_ce": {"hr_10": 0.315, "ndcg_10": 0.182},
        "GRU4Rec_recbole": {"hr_10": 0.278, "ndcg_10": 0.155},
        "NARM_recbole": {"hr_10": 0.266, "ndcg_10": 0.147},
    },
    "target": {"hr_10": 0.32, "ndcg_10": 0.19},
}
BENCH_DEFAULTS = {"seq_len": 200, "min_item_count": 5, "epochs": 40, "patience": 5}
REPORTED_SETTINGS = (
    *HYPER_PARAMETERS,
    "epochs",
    "patience",
    "min_item_count",
    "als_rank",
    "als_reg_param",
    "als_alpha",
    "als_max_iter",
)


def prepare_raw_events(settings, dataset: str | None, events: Path | None) -> dt.date:
    """Puts the raw events under the bench root (ML-1M converted once, a given folder linked) -> the last dt."""
    from model_lib.lake import dated_folders
    from model_lib.sources import convert_movielens

    raw = settings.raw_events_dir
    if events is not None:
        events = events.resolve()
        if not dated_folders(events, "dt", dt.date.max):
            raise FileNotFoundError(f"{events} holds no dt=YYYY-MM-DD folders of raw events")
        raw.parent.mkdir(parents=True, exist_ok=True)
        if raw.is_symlink() or raw.exists():
            if raw.resolve() != events:
                raise FileExistsError(f"{raw} already holds other raw events; use another --root")
        else:
            raw.symlink_to(events, target_is_directory=True)
    elif dataset == "ml-1m" and not raw.exists():
        convert_movielens(raw, settings.items_dir)
    return dated_folders(raw, "dt", dt.date.max)[-1][0]


def run(settings, dataset: str | None, events: Path | None) -> dict:
    from jobs import sessionize
    from model_lib import baselines
    from model_lib.lake import parquet_files, read_parquet_folder, read_sequences
    from model_lib.schemas import FIRST_ITEM_INDEX
    from model_lib.spark import spark_session
    from model_lib.splits import protocol_split
    from model_lib.training import evaluate_model, train_next_item_model

    started = time.perf_counter()
    ds = prepare_raw_events(settings, dataset, events)
    spark = spark_session(settings, "reco-bench-accuracy")
    try:
        stats = sessionize.run(settings, ds, spark=spark, mode="full")
        files = parquet_files(settings.sequences_dir(ds))
        vocabulary = read_parquet_folder(settings.vocab_dir(ds))
        num_items = int(vocabulary["item_index"].max()) + 1
        split = protocol_split(read_sequences(files))
        with stage("bench: train") as report:
            trained = train_next_item_model(files, num_items, settings, verbose=0, validation=split.validation)
            report(epochs=len(trained.history), best_epoch=trained.best_epoch, seconds=trained.seconds)
        with stage("bench: test metrics, model and baselines") as report:
            model = evaluate_model(trained.model, split.test, num_items)
            popular = baselines.most_popular(split.train, split.test, num_items)
            als = baselines.als(spark, split.test, num_items, settings.als_params())
            report(model_ndcg_10=model["ndcg_10"], popular_ndcg_10=popular["ndcg_10"], als_ndcg_10=als["ndcg_10"])
    finally:
        spark.stop()
    return {
        "bench": "accuracy",
        "dataset": dataset or str(events),
        "ds": ds.isoformat(),
        "events": stats["valid"],
        "users": int(len(split.test.targets)),
        "items": int((vocabulary["item_index"] >= FIRST_ITEM_INDEX).sum()),
        "protocol": "leave-one-out, full ranking, seen items excluded, items < min_item_count dropped once",
        "hyper_parameters": {key: getattr(settings, key) for key in REPORTED_SETTINGS},
        "strategy": trained.strategy,
        "train_seconds": round(trained.seconds, 1),
        "epochs_run": len(trained.history),
        "best_epoch": trained.best_epoch,
        "validation_ndcg_10_per_epoch": [round(h["val_ndcg_10"], 4) for h in trained.history],
        "model": _rounded(model),
        "most_popular": _rounded(popular),
        "als": _rounded(als),
        "reference": REFERENCE,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in metrics.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="reco bench accuracy", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=["ml-1m"])
    source.add_argument("--events", type=Path, help="a raw-event folder with dt=YYYY-MM-DD sub-folders")
    parser.add_argument("--root", type=Path, help="working folder (default data/bench/accuracy/<name>)")
    args = parser.parse_args(argv)
    name = args.dataset or args.events.resolve().name
    root = args.root or PROJECT_ROOT / "data" / "bench" / "accuracy" / name
    # Benchmark defaults first, then RECO_* from the environment win over them.
    probe = get_settings()
    explicit = {key for key in BENCH_DEFAULTS if key in probe.model_fields_set}
    defaults = {key: value for key, value in BENCH_DEFAULTS.items() if key not in explicit}
    settings = get_settings(data_dir=root, **defaults)
    result = run(settings, args.dataset, args.events)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
