"""Step 3 — promote: the gate between `challenger` and `champion` in the MLflow registry.

Reads   lake/sessionized/ds=D/sequences/ (the hold-out both models are scored on), its vocab/ and the registry
Writes  the `champion` alias and, on the challenger version, tags saying what the gate decided and why

The challenger becomes champion only when it passes the sanity checks (finite scores, coverage@20 of at least
`promote_min_coverage`, a vocabulary that knows at least `promote_min_known_share` of the hold-out's events, the
configured event types) and either there is no champion yet or its NDCG@10 on the same hold-out beats the
champion's by more than `promote_margin`. Otherwise it stays challenger. `reco promote --version N` promotes a
version by hand; `reco rollback` moves champion back to the version it replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import numpy as np

from model_lib.config import SessionizedDay, Settings, get_settings, parse_ds
from model_lib.contracts import FIRST_ITEM_INDEX
from model_lib.data.sequence_files import read_sequences
from model_lib.data.splits import HoldOut, protocol_split
from model_lib.data.vocabulary import fit_problems, vocabulary_item_ids
from model_lib.evaluation.metrics import COVERAGE_K, RankingMetric, evaluate_holdout
from model_lib.progress import say, stage
from model_lib.serving import registry
from model_lib.serving.recommender import IncompatibleModelError, Recommender
from model_lib.storage.lake import pinned, read_parquet_folder


def remap_to(recommender: Recommender, holdout: HoldOut, item_ids: np.ndarray) -> tuple[dict, list, np.ndarray]:
    """A hold-out indexed with one vocabulary (`item_ids`: index -> raw id) in another model's indices."""
    lookup = recommender.translation_from(item_ids)
    older = [lookup[items] for items in holdout.inputs.older_items]
    return holdout.inputs.model_inputs(lookup), older, lookup[holdout.targets]


def holdout_report(
    recommender: Recommender, holdout: HoldOut, item_ids: np.ndarray, settings: Settings
) -> dict[str, float]:
    """The hold-out metrics of one model plus what the sanity checks need: NaN score rows, known-event share."""
    inputs, older, targets = remap_to(recommender, holdout, item_ids)
    nan_rows = 0

    def checked_score(batch: dict[str, np.ndarray]) -> np.ndarray:
        nonlocal nan_rows
        scores = recommender.score(batch)
        nan_rows += int(np.isnan(scores).any(axis=1).sum())
        return scores

    ks = (settings.training.eval_k, COVERAGE_K)
    # Coverage over the items the model knows: what its lists are drawn from (vocabulary.catalogue_items).
    items = int((recommender.item_ids != "").sum())
    metrics = evaluate_holdout(
        checked_score,
        inputs,
        older,
        targets,
        recommender.num_items,
        ks,
        policy=settings.repeat_rule(),
        catalogue_items=items,
    )
    # Of the events whose item the day's vocabulary knows, the share this model knows too.
    day_known = holdout.inputs.items >= FIRST_ITEM_INDEX
    known = float((inputs["items"][day_known] >= FIRST_ITEM_INDEX).mean()) if day_known.any() else 1.0
    return {**metrics, "nan_score_rows": float(nan_rows), "known_share": known}


def sanity_problems(report: dict[str, float], recommender: Recommender, settings: Settings) -> list[str]:
    """Why a model must not become champion whatever its NDCG; empty when it may."""
    problems, target, coverage = [], gate_metric(settings), RankingMetric("coverage", COVERAGE_K)
    if report["nan_score_rows"] or not np.isfinite(report[target.key]):
        problems.append(f"{int(report['nan_score_rows'])} users got NaN scores")
    if report[coverage.key] < settings.gate.promote_min_coverage:
        problems.append(
            f"{coverage.label} {report[coverage.key]:.4f} is below the floor {settings.gate.promote_min_coverage}"
        )
    problems += fit_problems(
        report["known_share"],
        settings.gate.promote_min_known_share,
        "RECO_PROMOTE_MIN_KNOWN_SHARE",
        "the hold-out's events",
        recommender.event_types,
        settings.sessionize.event_types,
    )
    return problems


def gate_metric(settings: Settings) -> RankingMetric:
    """What the gate compares: NDCG at the settings' eval_k (the same K early stopping judges by)."""
    return RankingMetric("ndcg", settings.training.eval_k)


def score_both(settings: Settings, ds: dt.date, challenger: int, champion: int | None, target: RankingMetric):
    """Both versions on the same pinned hold-out of ds -> (hold-out reports by role, why the champion cannot be scored
    or None, the hold-out's users, the challenger's recommender)."""
    with stage(f"promote: score v{challenger} and v{champion} on the ds={ds} hold-out") as report:
        with pinned(settings.lake.sessionized_dir(ds), SessionizedDay.READ_PARTS) as pin:  # one version of the day
            day = SessionizedDay(pin)
            holdout = protocol_split(read_sequences(day.sequences), settings.sessionize.seq_len).test
            item_ids = vocabulary_item_ids(read_parquet_folder(day.vocab))
        candidate = registry.load_recommender(settings, challenger)
        scores = {"challenger": holdout_report(candidate, holdout, item_ids, settings)}
        unusable_champion = None
        if champion is not None:
            try:
                incumbent = registry.load_recommender(settings, champion)
            except IncompatibleModelError as error:
                unusable_champion = str(error)  # written by older code: this code cannot score it at all
            else:
                scores["champion"] = holdout_report(incumbent, holdout, item_ids, settings)
        report(users=len(holdout.targets), **{f"{who}_{target.key}": m[target.key] for who, m in scores.items()})
    return scores, unusable_champion, len(holdout.targets), candidate


def judge(scores: dict, candidate, settings: Settings, champion, unusable_champion, target: RankingMetric):
    """-> (whether the challenger wins the gate, the reason in words)."""
    problems = sanity_problems(scores["challenger"], candidate, settings)
    if problems:
        promoted, reason = False, "sanity checks failed: " + "; ".join(problems)
    elif champion is None:
        promoted, reason = True, f"first model ({target.label} {scores['challenger'][target.key]:.4f}): no champion yet"
    elif unusable_champion:
        promoted, reason = True, f"champion v{champion} cannot be scored by this code ({unusable_champion})"
    else:
        new, old = scores["challenger"][target.key], scores["champion"][target.key]
        promoted = new - old > settings.gate.promote_margin
        verdict = "beats" if promoted else "does not beat"
        margin = settings.gate.promote_margin
        reason = f"{target.label} {new:.4f} {verdict} v{champion}'s {old:.4f} by more than {margin}"
    return promoted, reason


def gate(settings: Settings, ds: dt.date, challenger: int | None = None, auto_promote: bool = True) -> dict:
    """Scores challenger and champion on the hold-out of ds; promotes the challenger when it is sane and wins.

    With auto_promote off the gate still scores, checks and tags the challenger, but leaves the alias to a person.
    """
    started, target = time.time(), gate_metric(settings)
    client = registry.configure(settings)
    challenger = challenger or registry.alias_version(client, settings, registry.CHALLENGER)
    if challenger is None:
        raise LookupError(f"no `{registry.CHALLENGER}` version of {settings.model.model_name}: run `reco train` first")
    champion = registry.alias_version(client, settings, registry.CHAMPION)
    decision = {"ds": ds.isoformat(), "challenger": challenger, "champion_before": champion}
    if champion == challenger:
        return {**decision, "promoted": False, "reason": "the challenger already is the champion"}
    scores, unusable_champion, users, candidate = score_both(settings, ds, challenger, champion, target)
    decision.update({f"{who}_{target.key}": m[target.key] for who, m in scores.items()})
    promoted, reason = judge(scores, candidate, settings, champion, unusable_champion, target)
    decision_tag = "promoted" if promoted else "held"
    if promoted and not auto_promote:
        promoted, decision_tag = False, "passed, not promoted (auto_promote off)"
        reason = (
            f"passes the gate ({reason}), but auto_promote is off: promote with `reco promote --version {challenger}`"
        )
    if promoted:
        # MLflow has no compare-and-set on an alias: re-read it right before moving it, so a promotion or rollback
        # made by hand while the gate scored (minutes) is never overwritten. What remains is the window between this
        # read and the alias write below (one registry round trip).
        now = registry.alias_version(client, settings, registry.CHAMPION)
        if now != champion:
            promoted, decision_tag = False, "held (champion changed)"
            reason = (
                f"the champion moved from v{champion} to v{now} while the gate scored (a promotion or rollback by "
                f"hand), and the gate does not overwrite it: run the gate again to compare v{challenger} with v{now}"
            )
            say(f"promotion refused: {reason}")
    if promoted:
        registry.set_champion(client, settings, challenger, reason)
    tags = {"gate_ds": ds.isoformat(), "gate_decision": decision_tag, "gate_reason": reason}
    if "champion" in scores:
        tags["champion_comparison"] = (
            f"v{challenger} {scores['challenger'][target.key]:.5f} vs v{champion} {scores['champion'][target.key]:.5f} "
            f"({target.label}, ds={ds} hold-out, {users} users)"
        )
    for key, value in tags.items():
        client.set_model_version_tag(settings.model.model_name, str(challenger), key, value)
    return {**decision, "promoted": promoted, "reason": reason, "seconds": round(time.time() - started, 1)}


def promote_version(settings: Settings, version: int) -> dict:
    client = registry.configure(settings)
    client.get_model_version(settings.model.model_name, str(version))  # fails clearly for an unknown version
    registry.set_champion(client, settings, version, "promoted by hand")
    return {"champion": version, "promoted": True, "reason": "promoted by hand"}


def rollback(settings: Settings) -> dict:
    client = registry.configure(settings)
    current = registry.alias_version(client, settings, registry.CHAMPION)
    if current is None:
        raise LookupError("there is no champion to roll back")
    previous = client.get_model_version(settings.model.model_name, str(current)).tags.get("previous_champion")
    if previous is None:
        raise LookupError(f"champion v{current} has no previous champion recorded")
    client.set_registered_model_alias(settings.model.model_name, registry.CHAMPION, previous)
    client.set_model_version_tag(
        settings.model.model_name, str(current), "rolled_back", f"champion back to v{previous}"
    )
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
    say(f"promote {json.dumps(result)}")
    return result


if __name__ == "__main__":
    main()
