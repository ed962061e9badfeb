"""What a training run reports to MLflow besides numbers: the training curves, the test comparison chart of the
model and every baseline, the metrics table, and the model card that travels with the registered version."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from model_lib.config import PROJECT_ROOT, Settings
from model_lib.config.groups import HYPER_PARAMETERS
from model_lib.contracts import FIRST_ITEM_INDEX


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
    left.set(title="training loss (masked cross-entropy)", xlabel="validation round")
    right.plot(epochs, [h[f"val_hr_{k}"] for h in history], marker="o", label=f"HR@{k}")
    right.plot(epochs, [h[f"val_ndcg_{k}"] for h in history], marker="o", label=f"NDCG@{k}")
    right.set(title="validation (full ranking, the served candidates)", xlabel="validation round")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def segments_picture(points: pd.DataFrame, segments: pd.DataFrame, path: Path) -> Path:
    """The users' vectors in 2-D (principal components), coloured by segment, each segment labelled at its mean
    with its size and description. points: x, y, segment (a sample); segments: segment, users, x, y, description."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(10, 7))
    axes.scatter(points["x"], points["y"], c=points["segment"], cmap="tab10", s=6, alpha=0.5)
    for row in segments.itertuples():
        label = f"{row.segment}: {row.users:,} users\n{row.description[:60]}"
        axes.annotate(label, (row.x, row.y), fontsize=8, ha="center", bbox={"boxstyle": "round", "fc": "white"})
    axes.set(title="user segments (KMeans on the model's user vectors), first two principal components")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def comparison_chart(results: dict[str, dict[str, float]], path: Path) -> Path:
    """Grouped bars: the model and each baseline on the same test split."""
    plt = _pyplot()
    first = next(iter(results.values()))
    names = [name for name in ("hr_10", "ndcg_10", "mrr_10", "hr_20", "ndcg_20", "coverage_20") if name in first]
    positions = np.arange(len(names))
    width = 0.8 / len(results)
    figure, axes = plt.subplots(figsize=(9, 4))
    for offset, (label, metrics) in enumerate(results.items()):
        axes.bar(positions + (offset - (len(results) - 1) / 2) * width, [metrics[n] for n in names], width, label=label)
    axes.set_xticks(positions, [n.replace("_", "@") for n in names])
    axes.set(title="test metrics, leave-one-out, full ranking, the served candidates (repeat policy)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def metrics_table(results: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per scorer, one column per metric: the final metrics table logged to MLflow."""
    return pd.DataFrame([{"scorer": name, **metrics} for name, metrics in results.items()])


def model_card(
    settings: Settings, ds: dt.date, window: str, table: pd.DataFrame, split_users: int, num_items: int, path: Path
) -> Path:
    """The model card that travels with the registered version: what it is, what it was trained on, how it did."""
    columns = [c for c in ("scorer", "hr_10", "ndcg_10", "mrr_10", "hr_20", "ndcg_20", "coverage_20") if c in table]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in table[columns].to_dict("records"):
        rows.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in record.values()) + " |")
    hyper = ", ".join(f"{name}={value}" for name, value in settings.pick(HYPER_PARAMETERS).items())
    seq_len, top_k, policy = settings.sessionize.seq_len, settings.serving.top_k, settings.repeat_rule().describe()
    path.write_text(
        f"""# Model card: {settings.model.model_name}

**What it does.** Predicts each user's next item from their last {seq_len} events (item, event type, time
gap): embeddings -> LSTM -> causal attention -> scores over all {num_items - FIRST_ITEM_INDEX:,} items. The nightly
run recommends the top {top_k} items per user under the repeat policy {policy}
(with the repeat mechanism when seen items may come back); each item's reason is the history item the last step
attended to that is most like it (attention x (1 + cosine) / 2). Users whose history holds only unknown items get
the most popular items instead.

**Data.** Sequences of lake/sessionized/ds={ds}/sequences ({split_users:,} users); events from {window}; vocabulary
lake/sessionized/ds={ds}/vocab (travels inside this model). Code version {code_version()}.

**Hyper-parameters.** {hyper}, early stopping on validation NDCG@{settings.training.eval_k}.

**Test metrics** (leave-one-out: each user's last event, after dropping items seen fewer than
{settings.sessionize.min_item_count} times; full ranking over the candidates the served list ranks, policy
{policy}):

{chr(10).join(rows)}

See test_comparison.png beside this card.

**Limits.** Items that arrived after ds are unknown to the model until the next training. Trained on one machine's
data window: check the promotion tags (champion comparison) before relying on it.
"""
    )
    return path


def data_window(event_times: np.ndarray | None) -> str:
    """The first and last event time of the sequences (epoch seconds, 0 = padding), as ISO dates."""
    times = event_times[event_times > 0] if event_times is not None else np.zeros(0)
    if len(times) == 0:
        return "unknown (no event times in the sequences)"
    first, last = (dt.datetime.fromtimestamp(int(t), dt.UTC).date().isoformat() for t in (times.min(), times.max()))
    return f"{first}..{last}"


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
