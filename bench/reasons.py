"""Reasons benchmark: does each recommendation's reason (`reason_item_id`) explain it under the model? One JSON line.

    reco bench reasons [--users 200] [--k 10] [--seed 7]

Reads what a night reads (after `make demo`, or any data folder RECO_DATA_DIR points at): the champion from the
MLflow registry and the latest sessionized day. For a seeded sample of users with at least two distinct known items
in their window, it recommends the top K exactly as the nightly job does (Recommender.recommend: repeat policy,
reasons), then, for every distinct known item j of the user's window, removes every event of j (the remaining events
keep their times; gap buckets, and so sessions, are recomputed from them) and scores the user again. For each
recommended item r:
    drop_j(r) = log P(r | history) - log P(r | history without j)
with log P the served distribution (the softmax of the scores over the rankable items; with the transition and
repeat mixtures when the model has them). Reported:
    top_share        pairs (user, r) whose reason item has the largest drop of all of the user's items (ties count)
    above_random     pairs whose reason's drop exceeds that of one other history item drawn at random (seeded)
    reasons_per_list distinct reasons in a user's top K, on average
    reason_cost      seconds spent choosing reasons / seconds of the rest of the scoring (encode, multiply, top-K), in
                     the same recommend call
The targets (issue 36): top_share >= 0.5, above_random >= 0.8, reason_cost < 0.15.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import numpy as np

from model_lib.config import get_settings
from model_lib.contracts import FIRST_ITEM_INDEX, MODEL_INPUTS, PAD_INDEX


def without_item(items, types, times, item: int, max_bucket: int):
    """One user's window (T,) with every event of `item` removed, left-padded again; gap buckets from the times."""
    from model_lib.serving.recommender import gap_buckets_of_seconds

    keep = (items != PAD_INDEX) & (items != item)
    width = len(items)
    kept = int(keep.sum())
    new_items, new_types, new_gaps = (np.zeros(width, np.int32) for _ in range(3))
    new_items[width - kept :] = items[keep]
    new_types[width - kept :] = types[keep]
    if kept:
        new_gaps[width - kept :] = gap_buckets_of_seconds(times[keep], max_bucket)
    return new_items, new_types, new_gaps


def log_probabilities(scores: np.ndarray) -> np.ndarray:
    """(b, V) served scores (-inf: not rankable) -> log of their softmax over the rankable items."""
    finite = np.isfinite(scores)
    peak = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    total = np.log(np.where(finite, np.exp(scores - peak), 0.0).sum(axis=1, keepdims=True)) + peak
    return scores - total


def sample_users(sequences, users: int, seed: int) -> np.ndarray:
    distinct = np.array([len(np.unique(row[row >= FIRST_ITEM_INDEX])) for row in sequences.items])
    eligible = np.flatnonzero(distinct >= 2)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, min(users, len(eligible)), replace=False))


def measure(recommender, sequences, k: int, max_bucket: int, seed: int) -> dict:
    """The figures of the module docstring for these users (Sequences in the model's indices, cut to its window)."""
    inputs = sequences.model_inputs()
    timings: dict[str, float] = {}
    served = recommender.recommend(inputs, sequences.older_items, k, timings=timings)
    rng = np.random.default_rng(seed)
    top, above, pairs, distinct_reasons = 0, 0, 0, []
    for user in range(len(sequences)):
        items, types, times = inputs["items"][user], inputs["event_types"][user], sequences.times[user]
        chosen = served.items[user][np.isfinite(served.scores[user])]
        reasons = served.reasons[user][: len(chosen)]
        candidates = np.unique(items[items >= FIRST_ITEM_INDEX])
        rows = [without_item(items, types, times, item, max_bucket) for item in candidates]
        ablated = {name: np.stack([row[n] for row in rows]) for n, name in enumerate(MODEL_INPUTS)}
        full = log_probabilities(recommender.score({name: values[user : user + 1] for name, values in inputs.items()}))
        drops = full[:, chosen] - log_probabilities(recommender.score(ablated))[:, chosen]  # (items, K)
        distinct_reasons.append(len(np.unique(reasons[reasons >= FIRST_ITEM_INDEX])))
        for column, reason in enumerate(reasons):
            if reason < FIRST_ITEM_INDEX:
                continue
            row = int(np.flatnonzero(candidates == reason)[0])
            others = np.flatnonzero(candidates != reason)
            pairs += 1
            top += bool(drops[row, column] >= drops[:, column].max() - 1e-6)
            above += bool(drops[row, column] > drops[rng.choice(others), column])
    scoring = sum(seconds for phase, seconds in timings.items() if phase != "reasons")
    return {
        "pairs": pairs,
        "top_share": round(top / max(pairs, 1), 4),
        "above_random": round(above / max(pairs, 1), 4),
        "reasons_per_list": round(float(np.mean(distinct_reasons)), 2) if distinct_reasons else 0.0,
        "reason_seconds": round(timings.get("reasons", 0.0), 4),
        "scoring_seconds": round(scoring, 4),
        "reason_cost": round(timings.get("reasons", 0.0) / max(scoring, 1e-9), 4),
    }


def run(settings, users: int, k: int, seed: int) -> dict:
    from model_lib.data.sequence_files import read_sequences
    from model_lib.data.splits import Sequences
    from model_lib.serving import registry
    from model_lib.storage.lake import dated_folders, read_parquet_folder

    days = dated_folders(settings.lake.sessionized_root, "ds", dt.date.max)
    if not days:
        raise FileNotFoundError(f"no sessionized day under {settings.lake.sessionized_root}: run `make demo` first")
    ds = days[-1][0]
    version = registry.champion_version(settings)
    recommender = registry.load_recommender(settings, version)
    vocabulary = read_parquet_folder(settings.lake.vocab_dir(ds)).sort_values("item_index")
    day_ids = np.full(int(vocabulary["item_index"].max()) + 1, "", dtype=object)
    day_ids[vocabulary["item_index"].to_numpy()] = vocabulary["item_id"].to_numpy()
    to_model = recommender.translation_from(day_ids)
    stored = read_sequences(settings.lake.sequences_dir(ds))
    sequences = Sequences(
        stored.user_ids,
        to_model[stored.items],
        stored.event_types,
        stored.gaps,
        [to_model[older] for older in stored.older_items],
        stored.times,
    ).last_events(settings.sessionize.seq_len)
    chosen = sequences.subset(sample_users(sequences, users, seed))
    started = time.perf_counter()
    figures = measure(recommender, chosen, k, settings.sessionize.num_gap_buckets - 1, seed)
    return {
        "bench": "reasons",
        "ds": ds.isoformat(),
        "model_version": version,
        "users": len(chosen),
        "k": k,
        **figures,
        "targets": {"top_share": 0.5, "above_random": 0.8, "reason_cost": 0.15},
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="reco bench reasons", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-record", action="store_true", help="print the line without appending it to the results")
    args = parser.parse_args(argv)
    result = run(get_settings(), args.users, args.k, args.seed)
    print(json.dumps(result), flush=True)
    if not args.no_record:
        from bench import accuracy_report, results

        results.record(result, accuracy_report.REASONS)
        accuracy_report.render()
    return result


if __name__ == "__main__":
    main()
