"""A day of the recommend step's output (Parquet, the lake contract) written directly, for warehouse tests."""

import datetime as dt

import pandas as pd

DS = dt.date(2024, 1, 10)


def write_day(folder, users, version=1, ds=DS, k=3, files=1):
    folder.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame(
        [
            {
                "ds": ds.isoformat(),
                "user_id": u,
                "rank": r,
                "item_id": f"i{r}",
                "score": 1.0 / r,
                "source": "model",
                "reason_item_id": None if r == 2 else "i9",
                "model_name": "m",
                "model_version": version,
            }
            for u in users
            for r in range(1, k + 1)
        ]
    )
    for part in range(files):
        rows.iloc[part::files].to_parquet(folder / f"part-{part}.parquet", index=False)


def write_next_behaviour(folder, users, version=1, ds=DS, types=("view", "purchase")):
    """The user_next_behaviour rows of a day (contracts.USER_NEXT_BEHAVIOUR), probabilities summing to one."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame(
        [
            {
                "ds": ds.isoformat(),
                "user_id": u,
                "event_type": kind,
                "probability": 1.0 / len(types),
                "model_name": "m",
                "model_version": version,
            }
            for u in users
            for kind in types
        ]
    )
    rows.to_parquet(folder / "part-0.parquet", index=False)
