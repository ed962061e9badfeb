"""`reco`: one console script, a subcommand per pipeline step, calling the same functions the DAGs call.

reco data movielens | synth    raw events into lake/raw/events
reco sessionize --ds D         Spark: sequences + vocabulary + quarantine
reco train --ds D              TensorFlow + MLflow: a new `challenger` version
reco tune --ds D --name N      Optuna search on the validation target; reco_training uses it with tuned=N
reco promote --ds D | --version N | reco rollback
reco recommend --ds D          Spark: top-K per user with the champion
reco publish --ds D            warehouse: the day, atomically
reco retain --ds D             remove derived days beyond the retention settings (RECO_KEEP_*_DAYS)
reco show --user U [--ds D]    a user's recommendations with titles and reasons
reco bench accuracy | reasons | scoring | sessionize | skew | training_speed
                               the benchmarks under bench/ (one JSON line per result)
reco airflow [--port P]        the Airflow UI on 127.0.0.1 (API server, scheduler, DAG processor, triggerer)
reco settings                  the effective configuration
reco docs [--check]            the reference parts of docs/ generated from the code (settings, tables, commands)
reco spark-class-archive       make setup: record the Spark JVM's class-data archive (faster cold starts)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from model_lib.redaction import redact


def _data(args) -> None:
    from model_lib.config import get_settings
    from model_lib.data.sources import SynthSpec, convert_movielens, write_synth

    settings = get_settings()
    if args.source == "movielens":
        per_day = convert_movielens(settings.lake.raw_events_dir, settings.lake.items_dir, args.like_from)
    else:
        shape = {
            "malformed_share": args.malformed_share,
            "late_share": args.late_share,
            "duplicate_share": args.duplicate_share,
            "seed": args.seed,
            "start": dt.date.fromisoformat(args.start),
        }
        if args.events:
            spec = SynthSpec.for_events(args.events, args.days, **shape)
        else:
            spec = SynthSpec(users=args.users, items=args.items, days=args.days, **shape)
        per_day = write_synth(spec, settings.lake.raw_events_dir)
    print(
        json.dumps(
            {
                "days": len(per_day),
                "first_dt": min(per_day),
                "last_dt": max(per_day),
                "lines": sum(per_day.values()),
                "raw_dir": str(settings.lake.raw_events_dir),
            }
        )
    )


def _spark_class_archive(args) -> None:
    """Runs the nightly sessionize (a full night, then an incremental one) and an Arrow scoring pass on a tiny
    synthetic lake in a fresh JVM that records the classes it loads, and keeps them as the class-data archive every
    later Spark JVM of this virtualenv maps at start (model_lib/runtime.py, class_archive)."""
    import os
    import tempfile
    import time
    from pathlib import Path

    from pyspark.sql import functions as F

    from jobs import sessionize
    from model_lib.config import get_settings
    from model_lib.data.sources import SynthSpec, write_synth
    from model_lib.progress import say
    from model_lib.runtime import class_archive
    from model_lib.storage.spark import finish_class_archive, read_parquet, spark_session

    archive = class_archive()
    if archive.exists() and not args.force:
        say(f"spark class archive: {archive} is there already")
        return
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="reco-class-archive-") as folder:
        settings = get_settings(data_dir=Path(folder) / "data")
        spec = SynthSpec(users=60, items=40, days=2)
        write_synth(spec, settings.lake.raw_events_dir)
        # Recorded beside its final name, so that moving it into place is one rename on one file system.
        archive.parent.mkdir(parents=True, exist_ok=True)
        recorded = archive.with_name(f".{archive.name}.{os.getpid()}.recording")
        try:
            spark = spark_session(settings.engines, "reco-class-archive", archive_classes_to=recorded)
            sessionize.run(settings, spec.start, spark, mode="full")
            sessionize.run(settings, spec.start + dt.timedelta(days=1), spark, mode="incremental")
            sequences = read_parquet(spark, settings.lake.sequences_dir(spec.start + dt.timedelta(days=1)))
            # The scoring job's path: Arrow batches through a Python worker and back, one row per user collected.
            scored = sequences.select("user_id").mapInPandas(lambda batches: batches, "user_id string")
            scored.groupBy().agg(F.count_distinct("user_id")).toPandas()
            finish_class_archive(spark, recorded, archive)
        finally:
            recorded.unlink(missing_ok=True)  # after a failure: no part of one under a name a JVM could map
    say(f"spark class archive: {archive} ({archive.stat().st_size / 2**20:.0f} MiB) in {time.time() - started:.0f}s")


def _show(args) -> None:
    from model_lib.config import get_settings, parse_ds
    from model_lib.storage.warehouse import open_warehouse

    settings = get_settings()
    warehouse = open_warehouse(settings.engines.warehouse_url)
    ds = parse_ds(args.ds) if args.ds else warehouse.latest_ds()
    if ds is None:
        raise SystemExit(
            f"no recommendations published in {redact(settings.engines.warehouse_url)} yet: run reco_nightly first"
        )
    print(format_recommendations(args.user, ds, warehouse.user_recommendations(args.user, ds), item_titles(settings)))


def _airflow(args) -> None:
    from jobs.airflow_local import serve
    from model_lib.config import get_settings

    sys.exit(serve(get_settings(), args.port))


def _summary(args) -> None:
    """The end of `make demo`: some users' lists with titles, the champion's hold-out metrics, where the UIs are."""
    from model_lib.config import get_settings, parse_ds
    from model_lib.serving import registry
    from model_lib.storage.warehouse import open_warehouse

    settings = get_settings()
    ds = parse_ds(args.ds)
    warehouse = open_warehouse(settings.engines.warehouse_url)
    titles = item_titles(settings)
    for user in warehouse.some_users(ds, args.users):
        rows = warehouse.user_recommendations(user, ds, max_rank=5)
        chances = warehouse.next_behaviour(user, ds)
        # Configured types the data never had get ~0%: not worth a word.
        behaviour = ", ".join(f"{kind} {p:.0%}" for kind, p in chances.items() if p >= 0.005)
        segment = warehouse.user_segment(user, ds)
        print(
            format_recommendations(user, ds, rows, titles)
            + (f"\n  next event: {behaviour}" if chances else "")
            + (f"\n  segment {segment[0]}: {segment[1][:100]}" if segment else "")
            + "\n"
        )
    print(f"user segments on {ds} (table user_segments; picture in the champion's training run):")
    for segment in warehouse.segments(ds).itertuples():
        print(f"  {segment.segment}: {segment.users:>6,} users  {segment.description[:100]}")
    print(f"most anomalous users on {ds} (table user_anomalies: how unlikely the model found their day's events):")
    for user in warehouse.anomalies(ds, 5).itertuples():
        item = titles.get(user.most_surprising_item_id, user.most_surprising_item_id)
        print(
            f"  {user.user_id}: score {user.score:.2f} (percentile {user.percentile:.3f}, {user.events} events), "
            f"least expected: {item}"
        )
    client = registry.configure(settings)
    champion = registry.alias_version(client, settings, registry.CHAMPION)
    version = client.get_model_version(settings.model.model_name, str(champion)) if champion else None
    tags = version.tags if version else {}
    print(f"warehouse {redact(settings.engines.warehouse_url)}: last run {warehouse.last_run(ds)}")
    print(
        f"champion {settings.model.model_name} v{champion}: leave-one-out test HR@10 = {tags.get('test_hr_10')}, "
        f"NDCG@10 = {tags.get('test_ndcg_10')} (full ranking, seen items excluded)"
    )
    if version is not None and version.run_id:
        from model_lib.evaluation.baselines import METRIC_PREFIXES

        metrics = client.get_run(version.run_id).data.metrics
        found = {name: metrics.get(f"{prefix}_test_ndcg_10") for name, prefix in METRIC_PREFIXES.items()}
        print(
            "  baselines on the same split, NDCG@10: "
            + ", ".join(f"{name} {value:.4f}" for name, value in found.items() if value is not None)
        )
    print("MLflow UI:  make mlflow-ui   -> http://127.0.0.1:5000 (experiment reco-training, model reco-lstm-attention)")
    print("Airflow UI: make airflow     -> http://127.0.0.1:8080 (DAGs reco_training, reco_nightly)")


def item_titles(settings) -> dict[str, str]:
    """item_id -> title where item metadata exists (MovieLens); empty otherwise."""
    import pandas as pd

    path = settings.lake.items_dir / "items.parquet"
    if not path.exists():
        return {}
    items = pd.read_parquet(path)
    return dict(zip(items["item_id"], items["title"], strict=True))


def format_recommendations(user: str, ds, rows, titles: dict[str, str]) -> str:
    if rows.empty:
        return f"no recommendations for user {user!r} on {ds}"
    lines = [f"user {user} on {ds} (model v{rows['model_version'].iloc[0]}, source {rows['source'].iloc[0]}):"]
    for row in rows.itertuples():
        reason = (
            f"  because you liked {titles.get(row.reason_item_id, row.reason_item_id)}" if row.reason_item_id else ""
        )
        lines.append(f"  {row.rank:>2}. {titles.get(row.item_id, row.item_id)}  [{row.score:.2f}]{reason}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reco", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_command(commands)
    _add_step_commands(commands)
    _add_tool_commands(commands)
    return parser


def _add_data_command(commands) -> None:
    data = commands.add_parser("data", help="write raw events into the lake")
    data.add_argument("source", choices=["movielens", "synth"])
    data.add_argument("--events", type=int, help="about this many events (sets users and items; e.g. 10000000)")
    data.add_argument("--users", type=int, default=500)
    data.add_argument("--items", type=int, default=300)
    data.add_argument("--days", type=int, default=10)
    data.add_argument("--malformed-share", type=float, default=0.01)
    data.add_argument("--late-share", type=float, default=0.02, help="lines landing in a later dt folder")
    data.add_argument("--duplicate-share", type=float, default=0.01)
    data.add_argument("--seed", type=int, default=7)
    data.add_argument(
        "--like-from",
        type=float,
        help="movielens: ratings with at least this many stars become `like` events, the others `rate` "
        "(default: every rating is a `rate` event)",
    )
    data.add_argument("--start", default="2024-01-01", help="first day of synthetic data")
    data.set_defaults(handler=_data)


def _add_step_commands(commands) -> None:
    """The pipeline's steps: each forwards its arguments to jobs/<step>.py's own parser."""
    for name in ("sessionize", "train", "tune", "recommend", "publish", "retain"):
        step = commands.add_parser(name, help=f"run the {name} step", add_help=False)
        step.set_defaults(handler=None, job=name)
    promote = commands.add_parser("promote", help="promotion gate, or --version N by hand", add_help=False)
    promote.set_defaults(handler=None, job="promote")
    rollback = commands.add_parser("rollback", help="champion back to the previous champion")
    rollback.set_defaults(handler=None, job="promote", extra=["--rollback"])


def _add_tool_commands(commands) -> None:
    show = commands.add_parser("show", help="a user's recommendations from the warehouse")
    show.add_argument("--user", required=True)
    show.add_argument("--ds")
    show.set_defaults(handler=_show)

    summary = commands.add_parser("summary", help="what the demo produced: lists, metrics, where the UIs are")
    summary.add_argument("--ds", required=True)
    summary.add_argument("--users", type=int, default=5)
    summary.set_defaults(handler=_summary)

    bench = commands.add_parser(
        "bench", help="benchmarks: accuracy (model vs baselines), scoring (users/s), sessionize (speed)"
    )
    bench.add_argument("name", choices=sorted(BENCHMARKS))
    bench.set_defaults(handler=None, job=None)

    ui = commands.add_parser("airflow", help="the Airflow UI on 127.0.0.1 with every component; Ctrl-C stops it")
    ui.add_argument("--port", type=int, default=8080)
    ui.set_defaults(handler=_airflow)

    archive = commands.add_parser(
        "spark-class-archive", help="record the Spark JVM's class-data archive (make setup runs it once)"
    )
    archive.add_argument("--force", action="store_true", help="record it again even when it exists")
    archive.set_defaults(handler=_spark_class_archive)

    docs = commands.add_parser("docs", help="regenerate the reference parts of docs/ (--check: exit 1 if stale)")
    docs.add_argument("--check", action="store_true", help="exit 1 naming the pages that are out of date")
    docs.set_defaults(handler=_docs)

    settings = commands.add_parser("settings", help="print the effective configuration")
    settings.set_defaults(handler=lambda args: print(_settings_json()))


BENCHMARKS = {
    "accuracy": "bench.accuracy",
    "reasons": "bench.reasons",
    "scoring": "bench.scoring",
    "sessionize": "bench.sessionize_bench",
    "skew": "bench.skew",
    "training_speed": "bench.training_speed",
}


def _docs(args) -> None:
    from jobs import docs

    docs.main(["--check"] if args.check else [])


def _settings_json() -> str:
    from model_lib.config import get_settings
    from model_lib.redaction import redact

    return redact(get_settings().model_dump_json(indent=2))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "handler", None) is not None:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.handler(args)
        return
    import importlib

    from model_lib.config import get_settings
    from model_lib.runtime import apply_engine_environment

    apply_engine_environment(get_settings().engines)
    if args.command == "bench":
        importlib.import_module(BENCHMARKS[args.name]).main(rest)
        return
    job = importlib.import_module(f"jobs.{args.job}")
    job.main(getattr(args, "extra", []) + rest)


if __name__ == "__main__":
    main()
