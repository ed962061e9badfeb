"""`reco tune`: an Optuna search on the validation target, one MLflow child run per trial, best settings stored
where `reco_training` finds them."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from helpers.sequence_files import cycle_sequences
from model_lib.data.sequence_files import write_sequences

DS = dt.date(2024, 1, 10)


@pytest.mark.slow
def test_a_short_search_stores_the_best_trial_and_training_applies_it(settings):
    import mlflow

    from jobs import tune
    from model_lib.model import tuning
    from model_lib.serving import registry

    num_items = 30
    sequences = cycle_sequences(200, num_items, 8)
    write_sequences(sequences, settings.lake.sequences_dir(DS))
    vocabulary = pd.DataFrame({"item_index": np.arange(2, num_items), "item_id": [f"i{k}" for k in range(2, 30)]})
    settings.lake.vocab_dir(DS).mkdir(parents=True)
    vocabulary.assign(count=1).to_parquet(settings.lake.vocab_dir(DS) / "part-0.parquet")
    small = settings.updated(**{"max_updates": 12, "eval_every_updates": 6, "xla": False, "als_baseline": False})

    record = tune.run(small, DS, "cycles", minutes=5, trials=3)

    assert record["trials"] == 3 and record["params"]["hidden_dim"] == record["params"]["embedding_dim"]
    stored = json.loads(tuning.tuned_path(small.lake, "cycles").read_text())
    assert stored == record
    client = registry.configure(small)
    children = client.search_runs(
        [client.get_experiment_by_name(registry.EXPERIMENT).experiment_id],
        f"tags.mlflow.parentRunId = '{record['mlflow_run_id']}'",
    )
    assert len(children) == 3
    values = [run.data.metrics.get("best_val_ndcg") for run in children if run.data.tags["trial_state"] == "complete"]
    assert max(values) == pytest.approx(record["best_val_ndcg"])
    assert all("test_ndcg_10" not in run.data.metrics for run in children)  # the test target is never scored
    applied = tuning.with_tuned(small.updated(tuned="cycles"))
    assert {key: applied.flat()[key] for key in record["params"]} == record["params"]
    with pytest.raises(FileNotFoundError, match="reco tune"):
        tuning.with_tuned(small.updated(tuned="other"))
    mlflow.end_run()
