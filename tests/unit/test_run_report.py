"""Run summaries: the headline fields per step, and only this run's Spark stats."""

import datetime as dt

from model_lib.run_report import collect, headline, summary_lines
from model_lib.storage.lake import write_run_stats

DS = dt.date(2024, 1, 5)


def test_headline_picks_the_named_fields_in_order_and_reaches_into_nested_results():
    trained = {"version": 3, "test": {"ndcg_10": 0.123456789, "hr_10": 0.2}, "run_id": "abc", "baselines": {}}
    assert headline("train", trained) == {"version": 3, "test.hr_10": 0.2, "test.ndcg_10": 0.1235}
    assert headline("resolve_champion", 7) == {"model_version": 7}


def test_collect_joins_spark_stats_and_returned_values_and_ignores_an_earlier_run(settings):
    write_run_stats(
        {"status": "succeeded", "mode": "incremental", "read": 10, "users": 4},
        settings.lake.run_stats_dir("sessionize", DS),
    )
    finished = dt.datetime.fromisoformat(
        __import__("pandas").read_parquet(settings.lake.run_stats_dir("sessionize", DS))["finished_at"][0]
    )
    returned = {"resolve_champion": 2, "publish": {"rows": 40, "users": 4, "model_version": 2, "seconds": 1.5}}
    steps = ("sessionize", "resolve_champion", "recommend", "publish")

    done = collect(settings, DS, steps, returned.get, since=finished - dt.timedelta(seconds=5))
    assert list(done) == ["sessionize", "resolve_champion", "publish"]  # recommend has not run: no entry
    assert done["sessionize"] == {"status": "succeeded", "mode": "incremental", "read": 10, "users": 4}
    assert summary_lines(done)[2] == "publish: model_version=2, users=4, rows=40, seconds=1.5"

    # A run that started after those stats were written must not report them as its own.
    later = collect(settings, DS, steps, returned.get, since=finished + dt.timedelta(seconds=5))
    assert "sessionize" not in later and later["publish"]["rows"] == 40
