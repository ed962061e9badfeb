"""Step 3 — promote: the gate between `challenger` and `champion` in the MLflow registry.

Reads   lake/sequences/ds=D/ (the hold-out both models are scored on) and the registry
Writes  the `champion` alias (and tags saying why), or nothing with a message saying why not

The challenger becomes champion when there is no champion yet, or when its test NDCG@10 on the same hold-out beats
the champion's by more than `promote_margin` and its scores are finite. `reco promote --version N` promotes a
version by hand; `reco rollback` moves champion back to the version it replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

import numpy as np

from model_lib import registry
from model_lib.config import Settings, get_settings, parse_ds
from model_lib.lake import read_parquet_folder, read_sequences
from model_lib.metrics import evaluate_holdout
from model_lib.progress import stage
from model_lib.scoring import Recommender
from model_lib.splits import HoldOut, protocol_split
from model_lib.vocabulary import vocabulary_item_ids


def remap_to(recommender: Recommender, holdout: HoldOut, item_ids: np.ndarray) -> tuple[dict, list, np.ndarray]:
    """A hold-out indexed with one vocabulary (`item_ids`: index -> raw id) in another model's indices."""
    lookup = recommender.translation_from(item_ids)
    older = [lookup[items] for items in holdout.inputs.older_items]
    return holdout.inputs.model_inputs(lookup), older, lookup[holdout.targets]


def holdout_metrics(recommender: Recommender, holdout: HoldOut, item_ids: np.ndarray) -> dict[str, float]:
    inputs, older, targets = remap_to(recommender, holdout, item_ids)
    return evaluate_holdout(recommender.score, inputs, older, targets, recommender.num_items)


def gate(settings: Settings, ds: dt.date, challenger: int | None = None) -> dict:
    """Compares challenger and champion on the hold-out of ds and promotes when the challenger wins."""
    client = registry.configure(settings)
    challenger = challenger or registry.alias_version(client, settings, registry.CHALLENGER)
    if challenger is None:
        raise LookupError(f"no `{registry.CHALLENGER}` version of {settings.model_name}: run `reco train` first")
    champion = registry.alias_version(client, settings, registry.CHAMPION)
    decision = {"ds": ds.isoformat(), "challenger": challenger, "champion_before": champion}
    if champion is None:
        registry.set_champion(client, settings, challenger, "first model: no champion yet")
        return {**decision, "promoted": True, "reason": "no champion yet"}
    if champion == challenger:
        return {**decision, "promoted": False, "reason": "the challenger already is the champion"}
    with stage(f"promote: score v{challenger} and v{champion} on the ds={ds} hold-out") as report:
        holdout = protocol_split(read_sequences(settings.sequences_dir(ds))).test
        item_ids = vocabulary_item_ids(read_parquet_folder(settings.vocab_dir(ds)))
        scores = {
            "challenger": holdout_metrics(registry.load_recommender(settings, challenger), holdout, item_ids),
            "champion": holdout_metrics(registry.load_recommender(settings, champion), holdout, item_ids),
        }
        report(challenger_ndcg_10=scores["challenger"]["ndcg_10"], champion_ndcg_10=scores["champion"]["ndcg_10"])
    gain = scores["challenger"]["ndcg_10"] - scores["champion"]["ndcg_10"]
    decision.update(challenger_ndcg_10=scores["challenger"]["ndcg_10"], champion_ndcg_10=scores["champion"]["ndcg_10"])
    if not np.isfinite(scores["challenger"]["ndcg_10"]):
        return {**decision, "promoted": False, "reason": "challenger scores are not finite"}
    if gain > settings.promote_margin:
        reason = (
            f"NDCG@10 {scores['challenger']['ndcg_10']:.4f} beats v{champion}'s {scores['champion']['ndcg_10']:.4f}"
        )
        registry.set_champion(client, settings, challenger, reason)
        return {**decision, "promoted": True, "reason": reason}
    return {
        **decision,
        "promoted": False,
        "reason": f"NDCG@10 gain {gain:+.4f} does not exceed the margin {settings.promote_margin}; v{champion} stays",
    }


def promote_version(settings: Settings, version: int) -> dict:
    client = registry.configure(settings)
    client.get_model_version(settings.model_name, str(version))  # fails clearly for an unknown version
    registry.set_champion(client, settings, version, "promoted by hand")
    return {"champion": version, "promoted": True, "reason": "promoted by hand"}


def rollback(settings: Settings) -> dict:
    client = registry.configure(settings)
    current = registry.alias_version(client, settings, registry.CHAMPION)
    if current is None:
        raise LookupError("there is no champion to roll back")
    previous = client.get_model_version(settings.model_name, str(current)).tags.get("previous_champion")
    if previous is None:
        raise LookupError(f"champion v{current} has no previous champion recorded")
    client.set_registered_model_alias(settings.model_name, registry.CHAMPION, previous)
    return {"champion": int(previous), "rolled_back_from": current}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", help="the day whose hold-out both models are scored on")
    parser.add_argument("--version", type=int, help="promote this version by hand, without the gate")
    parser.add_argument("--rollback", action="store_true", help="move champion back to the previous champion")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.rollback:
        result = rollback(settings)
    elif args.version:
        result = promote_version(settings, args.version)
    else:
        if not args.ds:
            parser.error("--ds is required for the promotion gate")
        result = gate(settings, parse_ds(args.ds))
    print(f"[reco] promote {json.dumps(result)}", flush=True)
    return result


if __name__ == "__main__":
    main()
