"""Step 5 — publish: one day of recommendations into the warehouse, atomically and idempotently.

Reads   lake/nightly/ds=D/<table>/ for every nightly table (contracts.NIGHTLY_TABLES; one committed night, pinned),
        lake/sessionized/ds=D/vocab/ (catalogue size for coverage)
Writes  the warehouse's nightly tables (the day replaced in all of them in one transaction), `recommendation_runs`
        and `published_tables`

Run as `python -m jobs.publish --ds D` or `reco publish --ds D`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import uuid

from model_lib.config import Settings, get_settings, parse_ds
from model_lib.contracts import NIGHTLY_TABLES, RECOMMENDATIONS
from model_lib.data.vocabulary import catalogue_items
from model_lib.progress import say, stage
from model_lib.redaction import redact
from model_lib.storage.lake import pinned, read_parquet_folder, read_run_stats
from model_lib.storage.warehouse import open_warehouse


def run(settings: Settings, ds: dt.date, run_id: str | None = None) -> dict:
    started_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    warehouse = open_warehouse(settings.engines.warehouse_url)
    # Coverage over the items the champion could recommend (the recommend job recorded them), as in MLflow; a night
    # recorded before that divides by the day's vocabulary.
    night = read_run_stats(settings.lake.run_stats_dir("recommend", ds)) or {}
    items = night.get("catalogue_items") or catalogue_items(read_parquet_folder(settings.lake.vocab_dir(ds)))
    with (
        stage(f"publish ds={ds} into {redact(settings.engines.warehouse_url)}") as report,
        # One committed night: a re-run of recommend may commit the day's next night while this one is read.
        pinned(settings.lake.nightly_dir(ds), tuple(table.name for table in NIGHTLY_TABLES)) as night,
    ):
        summary = warehouse.publish(
            ds,
            night / RECOMMENDATIONS.name,
            run_id or f"manual-{uuid.uuid4().hex[:12]}",
            items,
            started_at,
            {table.name: night / table.name for table in NIGHTLY_TABLES if table is not RECOMMENDATIONS},
        )
        report(**{k: v for k, v in summary.items() if k != "ds"})
    summary["seconds"] = round((dt.datetime.now(dt.UTC).replace(tzinfo=None) - started_at).total_seconds(), 1)
    say(f"publish summary {json.dumps(summary)}")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True)
    parser.add_argument("--run-id", help="recorded in recommendation_runs (the Airflow run id when the DAG calls it)")
    args = parser.parse_args(argv)
    return run(get_settings(), parse_ds(args.ds), args.run_id)


if __name__ == "__main__":
    main()
