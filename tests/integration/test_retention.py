"""jobs/retain.py over thirty real nights' outputs: every kind of derived data stays bounded by its setting, the
warehouse keeps its window of days, and what must stay (the newest day, yesterday, the aliased version's training
day, the raw events) stays."""

import datetime as dt

import pandas as pd

from helpers.recommendation_files import write_day
from helpers.sequence_files import register_tiny_model
from jobs import publish, retain
from model_lib.config import get_settings
from model_lib.serving import registry
from model_lib.storage.lake import dated_folders
from model_lib.storage.warehouse import open_warehouse

START = dt.date(2024, 5, 1)


def test_thirty_nights_stay_within_the_retention_settings(tmp_path):
    settings = get_settings(
        data_dir=tmp_path / "data",
        keep_sessionized_days=3,
        keep_quarantine_days=5,
        keep_nightly_days=4,
        keep_warehouse_days=10,
    )
    lake = settings.lake
    # The champion was trained on the second night: its day stays whatever its age.
    version, vocabulary = register_tiny_model(settings)
    client = registry.configure(settings)
    trained_on = START + dt.timedelta(days=1)
    client.set_model_version_tag(settings.model.model_name, str(version), "ds", trained_on.isoformat())
    client.set_registered_model_alias(settings.model.model_name, registry.CHAMPION, str(version))

    def days(root, key):
        return [day for day, _ in dated_folders(root, key, dt.date.max)]

    for night in range(30):
        ds = START + dt.timedelta(days=night)
        (lake.raw_events_day_dir(ds)).mkdir(parents=True)
        (lake.raw_events_day_dir(ds) / "part-0.jsonl").write_text("{}\n")
        lake.vocab_dir(ds).mkdir(parents=True)
        vocabulary.to_parquet(lake.vocab_dir(ds) / "part-0.parquet", index=False)
        lake.quarantine_dir(ds).mkdir(parents=True)
        write_day(lake.recommendations_dir(ds), ["u1", "u2"], version=version, ds=ds)
        publish.run(settings, ds, f"night-{night}")
        removed = retain.run(settings, ds)["removed"]

        sessionized = days(lake.sessionized_root, "ds")
        assert ds in sessionized and ds - dt.timedelta(days=1) in sessionized or night == 0
        assert len(sessionized) <= 3 + (trained_on not in sessionized[-3:]), sessionized
        assert trained_on in sessionized or night < 1
        assert len(days(lake.quarantine_root, "dt")) == min(night + 1, 5)
        assert len(days(lake.nightly_root, "ds")) == min(night + 1, 4)
        published = open_warehouse(settings.engines.warehouse_url).query(
            "SELECT DISTINCT ds FROM recommendations ORDER BY ds"
        )["ds"]
        assert len(published) == min(night + 1, 10) and pd.Timestamp(published.iloc[-1]).date() == ds
    print(f"after 30 nights: {removed}")
    assert len(days(lake.raw_events_dir, "dt")) == 30  # the source of truth is kept
    assert days(lake.sessionized_root, "ds") == [trained_on] + [START + dt.timedelta(days=n) for n in (27, 28, 29)]
    assert not list(lake.sessionized_root.glob(".del-*"))
