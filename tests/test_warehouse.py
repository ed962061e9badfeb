"""Publishing a day into a real DuckDB file: atomic, idempotent, and a failed publish leaves the old day."""

import datetime as dt

import pandas as pd
import pytest

from model_lib.warehouse import open_warehouse

DS = dt.date(2024, 1, 10)


def write_day(folder, users, version=1, ds=DS, k=3):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "ds": ds.isoformat(),
            "user_id": u,
            "rank": r,
            "item_id": f"i{r}",
            "score": 1.0 / r,
            "source": "model",
            "reason_item_id": "i9",
            "model_name": "m",
            "model_version": version,
        }
        for u in users
        for r in range(1, k + 1)
    ]
    pd.DataFrame(rows).to_parquet(folder / "part-0.parquet", index=False)


def test_republishing_a_day_replaces_it(settings, tmp_path):
    warehouse = open_warehouse(settings.warehouse_url)
    write_day(tmp_path / "day", ["u1", "u2"])
    now = dt.datetime(2024, 1, 11)
    first = warehouse.publish(DS, tmp_path / "day", "run-1", catalogue_size=10, started_at=now)
    second = warehouse.publish(DS, tmp_path / "day", "run-2", catalogue_size=10, started_at=now)
    assert first["rows"] == second["rows"] == 6
    counts = warehouse.query("SELECT count(*) AS n, count(DISTINCT (user_id, rank)) AS keys FROM recommendations")
    assert counts["n"][0] == counts["keys"][0] == 6
    runs = warehouse.query("SELECT run_id, users, rows, coverage FROM recommendation_runs ORDER BY run_id")
    assert runs.to_dict("records") == [
        {"run_id": "run-1", "users": 2, "rows": 6, "coverage": 0.3},
        {"run_id": "run-2", "users": 2, "rows": 6, "coverage": 0.3},
    ]


def test_a_failed_publish_leaves_the_previous_day_untouched(settings, tmp_path):
    warehouse = open_warehouse(settings.warehouse_url)
    write_day(tmp_path / "good", ["u1"])
    warehouse.publish(DS, tmp_path / "good", "run-1", 10, dt.datetime(2024, 1, 11))
    write_day(tmp_path / "wrong_day", ["u1", "u2", "u3"], ds=DS + dt.timedelta(days=1))
    with pytest.raises(ValueError, match="not for ds"):
        warehouse.publish(DS, tmp_path / "wrong_day", "run-2", 10, dt.datetime(2024, 1, 11))
    day = warehouse.query("SELECT user_id, count(*) AS n FROM recommendations GROUP BY 1")
    assert day.to_dict("records") == [{"user_id": "u1", "n": 3}]


def test_other_days_are_not_touched(settings, tmp_path):
    warehouse = open_warehouse(settings.warehouse_url)
    write_day(tmp_path / "d1", ["u1"])
    write_day(tmp_path / "d2", ["u1", "u2"], ds=DS + dt.timedelta(days=1))
    warehouse.publish(DS, tmp_path / "d1", "r1", 10, dt.datetime(2024, 1, 11))
    warehouse.publish(DS + dt.timedelta(days=1), tmp_path / "d2", "r2", 10, dt.datetime(2024, 1, 12))
    warehouse.publish(DS, tmp_path / "d1", "r3", 10, dt.datetime(2024, 1, 12))
    per_day = warehouse.query(
        "SELECT CAST(ds AS VARCHAR) AS ds, count(*) AS n FROM recommendations GROUP BY 1 ORDER BY 1"
    )
    assert per_day.to_dict("records") == [{"ds": "2024-01-10", "n": 3}, {"ds": "2024-01-11", "n": 6}]


def test_unknown_warehouse_scheme_is_rejected():
    with pytest.raises(ValueError, match="unsupported warehouse"):
        open_warehouse("postgresql://127.0.0.1/x")
