import gzip
import json

import numpy as np
import pandas as pd

from model_lib.data.sources import (
    SynthSpec,
    ratings_to_raw_events,
    read_movielens_items,
    read_movielens_ratings,
    synth_events,
    write_raw_events,
)


def test_synthetic_clickstream_is_seeded_and_has_the_funnel():
    spec = SynthSpec(users=50, items=30, days=3, malformed_share=0.05, seed=3)
    first, ts_first = synth_events(spec)
    again, _ = synth_events(spec)
    assert first["line"].tolist() == again["line"].tolist()
    assert np.all(np.diff(ts_first) >= 0)
    parsed = []
    for text in first["line"]:
        try:
            parsed.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    kinds = pd.Series([p.get("event_type") for p in parsed]).value_counts()
    assert kinds["view"] > kinds["add_to_cart"] > kinds["purchase"] > 0 and kinds["like"] > 0
    assert len(parsed) < len(first)  # some lines are broken on purpose
    assert any(isinstance(p.get("ts"), str) for p in parsed) and any(isinstance(p.get("ts"), int) for p in parsed)


def test_movielens_rows_become_rate_events_one_folder_per_day(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "ml-1m.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1m_1\tToy Story (1995)\t5\t978300760\n"
        "1m_1\tHeat (1995)\t3\t978300760\n"
        "1m_2\tHeat (1995)\t4\t978200000\n"
        "1m_2\tJumanji (1995)\t2\t978400000\n"
    )
    (folder / "ml-1m.item").write_text(
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
        "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\n"
    )
    events = ratings_to_raw_events(read_movielens_ratings(folder))
    assert events["item_id"].tolist() == ["Heat (1995)", "Toy Story (1995)", "Heat (1995)", "Jumanji (1995)"]
    assert events["ts"].tolist()[0] == 978200000000 and set(events["event_type"]) == {"rate"}
    # With a like threshold, ratings of 4 stars and more are likes (the demo's two behaviours), the stars kept.
    liked = ratings_to_raw_events(read_movielens_ratings(folder), like_from=4)
    assert liked["event_type"].tolist() == ["like", "like", "rate", "rate"]
    assert liked["value"].tolist() == [4.0, 5.0, 3.0, 2.0]
    written = write_raw_events(events, tmp_path / "raw")
    assert written == {"2000-12-30": 1, "2000-12-31": 2, "2001-01-02": 1}
    with gzip.open(tmp_path / "raw" / "dt=2000-12-31" / "part-00000.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle]
    assert [(r["item_id"], r["value"]) for r in rows] == [("Toy Story (1995)", 5.0), ("Heat (1995)", 3.0)]
    items = read_movielens_items(folder)
    assert items.to_dict("records") == [
        {"item_id": "Toy Story (1995)", "title": "Toy Story (1995)", "genres": "Animation|Children's|Comedy"}
    ]
