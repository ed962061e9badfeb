"""
### reco_training — sessionize -> train -> promote

Weekly (and on demand): rebuilds the sequences for the logical date, trains the LSTM + attention next-item model,
registers it in MLflow as a new version of `reco-lstm-attention` with alias `challenger`, and promotes it to
`champion` when there is none yet or when it beats the champion on the same leave-one-out hold-out.

Reads `lake/raw/events/dt=ds` and yesterday's `lake/state` (or every raw day, in a full rebuild); writes
`lake/sequences|vocab|state/ds=ds`, an MLflow run and a model version.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from model_lib.dag_parts import COMMON_DAG_ARGS, SESSIONIZE_PARAMS, sessionize_task


@dag(
    dag_id="reco_training",
    schedule="@weekly",
    tags=["reco", "training"],
    doc_md=__doc__,
    **COMMON_DAG_ARGS,
    params={
        **SESSIONIZE_PARAMS,
        "epochs": Param(None, type=["null", "integer"], minimum=1, description="override settings.epochs"),
    },
)
def reco_training():
    sessionize = sessionize_task()

    # A retry resumes from the epoch checkpoints in data/checkpoints/train-ds=<ds>/ and continues the MLflow run.
    @task(
        # Training a big catalogue takes hours (ML-1M at L = 200: about one hour on 2 cores).
        execution_timeout=timedelta(hours=12),
        doc_md="TensorFlow: train on lake/sequences/ds (resuming from its checkpoints on a retry), log to MLflow, "
        "register a `challenger` version.",
    )
    def train(ds: str | None = None, params: dict | None = None) -> dict:
        from jobs import train as job
        from model_lib.config import get_settings, parse_ds

        overrides = {"epochs": params["epochs"]} if params and params.get("epochs") else {}
        return job.run(get_settings(**overrides), parse_ds(ds))

    @task(
        doc_md="Promotion gate: the challenger becomes `champion` only if it passes the sanity checks and wins on "
        "the same hold-out; otherwise it stays `challenger` and the log says why."
    )
    def promote(trained: dict, ds: str | None = None) -> dict:
        from jobs import promote as job
        from model_lib.config import get_settings, parse_ds

        decision = job.gate(get_settings(), parse_ds(ds), challenger=trained["version"])
        outcome = "is the new champion" if decision["promoted"] else "stays challenger"
        print(f"[reco] promotion decision: v{decision['challenger']} {outcome}: {decision['reason']}")
        print(f"[reco] promotion decision details: {decision}")
        return decision

    trained = train()
    sessionize >> trained
    promote(trained)


reco_training()
