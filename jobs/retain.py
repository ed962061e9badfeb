"""Step 7 — retain: removes derived days older than the retention settings, so the lake and the warehouse stay
bounded however many nights run.

Reads   the day folders of lake/sessionized (ds=), lake/quarantine/events (dt=), lake/nightly (ds=) and, when
        RECO_KEEP_RAW_DAYS > 0, lake/raw/events (dt=); the registry's aliases (the day each aliased version was
        trained on)
Writes  removes the days beyond each kind's newest RECO_KEEP_*_DAYS (0 = keep all); deletes the warehouse's rows of
        days before the newest RECO_KEEP_WAREHOUSE_DAYS (ds included)

Never removed: the newest day of each kind, the day before ds (tonight's state continues it; training and backfills
pin what they read, see storage/lake.pinned), days after ds (a backfill's), and the sessionized day of a version
that holds an alias (the champion's and the challenger's training data). The raw events are the source of truth and
stay unless RECO_KEEP_RAW_DAYS says otherwise. Run as `python -m jobs.retain --ds D` or `reco retain --ds D`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path

from model_lib.config import Settings, get_settings, parse_ds
from model_lib.progress import say, stage
from model_lib.storage.lake import dated_folders, staging_path
from model_lib.storage.warehouse import open_warehouse


def days_to_remove(days: list[dt.date], ds: dt.date, keep: int, protected: set[dt.date]) -> list[dt.date]:
    """Of a kind's committed days, those retention removes at ds: beyond the newest `keep` at or before ds (0 = keep
    all), never the newest one, the day before ds, a day after ds, or a protected day."""
    if keep == 0:
        return []
    up_to_ds = sorted(day for day in days if day <= ds)
    kept = set(up_to_ds[-max(keep, 1) :]) | protected | {ds - dt.timedelta(days=1)}
    return [day for day in up_to_ds if day not in kept]


def remove_folder(folder: Path) -> None:
    """Out of readers' sight first (one rename), then deleted: no reader lists a half-deleted day."""
    staged = staging_path(folder)
    hidden = staged.with_name(staged.name.replace(".tmp-", ".del-", 1))
    folder.rename(hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def run(settings: Settings, ds: dt.date) -> dict:
    from model_lib.serving import registry

    lake = settings.lake
    aliased = registry.aliased_training_days(settings)
    kinds = {
        "sessionized": (lake.sessionized_root, "ds", lake.keep_sessionized_days, set(aliased.values())),
        "quarantine": (lake.quarantine_root, "dt", lake.keep_quarantine_days, set()),
        "nightly": (lake.nightly_root, "ds", lake.keep_nightly_days, set()),
        "raw": (lake.raw_events_dir, "dt", lake.keep_raw_days, set()),
    }
    removed = {}
    with stage(f"retain ds={ds}") as report:
        for kind, (root, key, keep, protected) in kinds.items():
            folders = dict(dated_folders(root, key, dt.date.max))
            gone = days_to_remove(list(folders), ds, keep, protected)
            for day in gone:
                remove_folder(folders[day])
            removed[kind] = len(gone)
        cutoff = ds - dt.timedelta(days=lake.keep_warehouse_days - 1)  # the newest N days: ds and N - 1 before
        if lake.keep_warehouse_days and settings.engines.warehouse_url:
            rows = open_warehouse(settings.engines.warehouse_url).remove_days_before(cutoff)
            removed["warehouse_rows"] = sum(rows.values())
        report(**removed)
    summary = {"ds": ds.isoformat(), "removed": removed, "aliased_days": {k: v.isoformat() for k, v in aliased.items()}}
    say(f"retain summary {json.dumps(summary)}")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True, help="the night whose retention runs (days up to it are judged)")
    args = parser.parse_args(argv)
    return run(get_settings(), parse_ds(args.ds))


if __name__ == "__main__":
    main()
