"""Ranking metrics: the one definition used by training, evaluation, promotion and benchmarks.

The candidates every metric ranks are the served list's: `model_lib/ranking.py` (the repeat policy, top-K).

Protocol: full ranking over exactly the candidates the served list would rank. For one held-out target per user:

    rank       = 1 + (candidates scoring strictly above the target) + (other candidates tied with it) / 2, the
                 expected position when ties are ordered at random (a constant scorer ranks the target mid-list,
                 never first); a target that is not a candidate is a miss (rank = infinity): a target outside the
                 catalogue
                 (index < 2), or, under exclude_seen, an item the user has seen (no "except the target": the served
                 list could never contain it)
    HR@K       = mean over users of [rank <= K]
    NDCG@K     = mean over users of [rank <= K] / log2(rank + 1)      (one relevant item, so IDCG = 1)
    MRR@K      = mean over users of [rank <= K] / rank
    coverage@K = |union of all users' top-K lists| / the items of the vocabulary the lists are drawn from (the
                 same denominator as the warehouse's recommendation_runs.coverage)
    paired difference (two scorers, the same users): mean over users of NDCG@K(a) - NDCG@K(b), and its standard
                 error std / sqrt(N): how `reco bench accuracy` judges whether the model beats a baseline
    repeat_target_share = share of targets the user has an event on already (whatever the policy): near 0 for
                 movies, large for re-purchase data, where exclude_seen caps HR@K at 1 - this share

Next event type (`next_type_metrics`): p (N, E) the predicted chance of each configured type for the held-out
event, y its actual type.
    accuracy   = mean [argmax p == y] (ties to the first type)
    log_loss   = mean -ln max(p[y], 1e-7)
    auc_<t>    = ROC AUC of p[t] separating events of type t from the others: P(p of a t-event > p of another)
                 + P(equal) / 2 (Mann-Whitney); undefined (absent) when the hold-out has no event of t or only those
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from model_lib.contracts import FIRST_ITEM_INDEX
from model_lib.ranking import ALLOW_REPEATS, EXCLUDE_SEEN, EXCLUDE_SEEN_POLICY, RepeatPolicy, top_k_items

ScoreFunction = Callable[[dict[str, np.ndarray]], np.ndarray]


def seen_items(items: np.ndarray, older_items: list[np.ndarray], num_items: int) -> np.ndarray:
    """(N, T) window items + older items -> (N, V) bool, true for every item the user has an event on."""
    return RepeatPolicy().mask(items, np.zeros_like(items), older_items, num_items)


def repeat_targets(items: np.ndarray, older_items: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """(N,) bool: the target is an item the user already has an event on (in the window or among older items)."""
    in_window = (items == targets[:, None]).any(axis=1)
    in_older = np.array(
        [bool(np.isin(target, older).any()) for target, older in zip(targets, older_items, strict=True)], bool
    )
    return (in_window | in_older) & (targets >= FIRST_ITEM_INDEX)


def suggest_policy(repeat_target_share: float, threshold: float = 0.05) -> str:
    """allow_repeats when more than `threshold` of the held-out next events are items the user had already seen:
    above that, exclude_seen makes those targets unreachable for every model."""
    return ALLOW_REPEATS if repeat_target_share > threshold else EXCLUDE_SEEN


def target_ranks(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """(N, V) scores, (N,) targets, (N, V) exclusions -> (N,) 1-based ranks among the candidates; inf for a target
    that is not a candidate (excluded, or outside the catalogue)."""
    rows = np.arange(len(targets))
    candidates = ~excluded
    candidates[:, :FIRST_ITEM_INDEX] = False
    target_scores = scores[rows, targets][:, None]
    above = ((scores > target_scores) & candidates).sum(axis=1)
    tied = ((scores == target_scores) & candidates).sum(axis=1) - 1  # the target ties with itself
    ranks = 1.0 + above + np.maximum(tied, 0) / 2.0
    return np.where(candidates[rows, targets], ranks, np.inf)


# The gate's coverage floor looks at the top 20, the served list's default length.
COVERAGE_K = 20
LABELS = {"hr": "HR", "ndcg": "NDCG", "mrr": "MRR", "coverage": "coverage"}


@dataclass(frozen=True)
class RankingMetric:
    """One metric at one K: its key in the dicts these functions return (ndcg_10) and its label (NDCG@10). The gate
    and early stopping judge RankingMetric("ndcg", settings.training.eval_k), whatever eval_k is."""

    name: str
    k: int

    @property
    def key(self) -> str:
        return f"{self.name}_{self.k}"

    @property
    def label(self) -> str:
        return f"{LABELS[self.name]}@{self.k}"


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """hr_K, ndcg_K, mrr_K and ndcg_K_stderr (the standard error of the NDCG mean: how noisy the estimate is)."""
    result = {}
    for k in ks:
        hit = ranks <= k
        gains = ndcg_gains(ranks, k)
        result[f"hr_{k}"] = float(hit.mean()) if len(ranks) else 0.0
        result[f"ndcg_{k}"] = float(gains.mean()) if len(ranks) else 0.0
        result[f"mrr_{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean()) if len(ranks) else 0.0
        result[f"ndcg_{k}_stderr"] = float(gains.std(ddof=1) / np.sqrt(len(ranks))) if len(ranks) > 1 else 0.0
    return result


def evaluate_holdout(
    score: ScoreFunction,
    inputs: dict[str, np.ndarray],
    older_items: list[np.ndarray],
    targets: np.ndarray,
    num_items: int,
    ks: Iterable[int] = (10, 20),
    batch_size: int = 512,
    policy: RepeatPolicy = EXCLUDE_SEEN_POLICY,
    with_ranks: bool = False,
    catalogue_items: int | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of a scorer on a hold-out under a repeat policy, in batches; returns hr_K, ndcg_K,
    mrr_K, coverage_K, users and repeat_target_share (and `ranks`, each user's rank (N,), when `with_ranks`: what
    paired_difference compares). `inputs` holds at least "items" and "event_types". `catalogue_items`: the
    coverage's denominator, the items of the vocabulary the lists are drawn from (vocabulary.catalogue_items;
    default: every index from FIRST_ITEM_INDEX)."""
    ks = tuple(ks)
    ranks, recommended = [], {k: set() for k in ks}
    for start in range(0, len(targets), batch_size):
        window = slice(start, start + batch_size)
        batch = {name: values[window] for name, values in inputs.items()}
        scores = np.asarray(score(batch), dtype=np.float32)
        excluded = policy.mask(batch["items"], batch["event_types"], older_items[window], num_items)
        ranks.append(target_ranks(scores, targets[window], excluded))
        top = top_k_items(scores, excluded, max(ks))
        for k in ks:
            recommended[k].update(np.unique(top[:, :k][top[:, :k] >= 0]).tolist())
    all_ranks = np.concatenate(ranks) if ranks else np.zeros(0)
    result = metrics_from_ranks(all_ranks, ks)
    for k in ks:
        result[f"coverage_{k}"] = len(recommended[k]) / max(1, catalogue_items or num_items - FIRST_ITEM_INDEX)
    result["users"] = float(len(all_ranks))
    repeats = repeat_targets(inputs["items"], older_items, targets)
    result["repeat_target_share"] = float(repeats.mean()) if len(repeats) else 0.0
    if with_ranks:
        result["ranks"] = all_ranks
    return result


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """(N,) ranks -> (N,) each user's NDCG@K: [rank <= K] / log2(rank + 1)."""
    return np.where(ranks <= k, 1.0 / np.log2(np.minimum(ranks, 1e12) + 1.0), 0.0)


def paired_difference(ranks: np.ndarray, reference_ranks: np.ndarray, k: int) -> dict[str, float]:
    """Two scorers' ranks of the same users' targets -> the mean per-user NDCG@K difference (first minus reference)
    and its standard error: the noise of a comparison on the same users, smaller than either mean's own."""
    difference = ndcg_gains(ranks, k) - ndcg_gains(reference_ranks, k)
    stderr = float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0
    return {"difference": float(difference.mean()) if len(difference) else 0.0, "stderr": stderr}


def popularity_scores(train_items: np.ndarray, num_items: int) -> np.ndarray:
    """(V,) item counts in the training inputs: the most-popular baseline's score for every user."""
    counts = np.bincount(train_items.ravel(), minlength=num_items).astype(np.float32)
    counts[:FIRST_ITEM_INDEX] = 0
    return counts


def next_type_metrics(probabilities: np.ndarray, targets: np.ndarray, names: list[str]) -> dict[str, float]:
    """probabilities (N, E) over the event types `names` (column j is 1-based type index j + 1), targets (N,) 1-based
    type indices -> accuracy, log_loss and auc_<name> for every type (see the module docstring)."""
    columns = np.asarray(targets, dtype=np.int64) - 1
    picked = probabilities[np.arange(len(columns)), columns]
    result = {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == columns)) if len(columns) else float("nan"),
        "log_loss": float(np.mean(-np.log(np.maximum(picked, 1e-7)))) if len(columns) else float("nan"),
    }
    for column, name in enumerate(names):
        positive = columns == column
        if 0 < positive.sum() < len(columns):
            result[f"auc_{name}"] = roc_auc(probabilities[:, column], positive)
    return result


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U over average ranks)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average rank of each group of equal scores (1-based).
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    positives = int(positive.sum())
    negatives = len(scores) - positives
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))
