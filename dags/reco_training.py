"""
### reco_training — wait for raw events -> sessionize -> train -> promote -> report

Weekly (and whenever triggered): rebuilds the sequences for the day, trains the LSTM + attention next-item model,
registers it in MLflow as a new version of `reco-lstm-attention` with alias `challenger`, and promotes it to
`champion` when it passes the sanity checks and beats the champion on the same leave-one-out hold-out (or when
there is no champion yet). With `auto_promote` off the gate only reports; a person promotes with
`reco promote --version N`.

**Reads** `lake/raw/events/dt=ds` and yesterday's state in `lake/sessionized/ds=ds-1` (or every raw day, in a full
rebuild).
**Writes** `lake/sessionized/ds=ds` (sequences, vocab, state: one unit), an MLflow run (curves, charts, model card),
a model version and, when promoted, the alias `champion`.

**Operate**: *Trigger* with the form for another day, epoch count or promotion policy. Training runs in this
worker, or as a GPU pod on Kubernetes with `RECO_TRAINING_LAUNCHER=kubernetes`. A retry resumes from the epoch
checkpoints in `data/checkpoints/train-ds=<ds>/`. The `report` task's XCom is the run's summary.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from dag_parts import (
    COMMON_DAG_ARGS,
    COMMON_PARAMS,
    champion_asset,
    mask_configured_secrets,
    raw_events_sensor,
    report_task,
    run_ds,
    sessionize_task,
    settings_overrides,
    training_task,
)
from model_lib.config import get_settings
from model_lib.progress import say

settings = get_settings()
mask_configured_secrets(settings)  # parsed again in every task process, so its logs mask them too


@dag(
    dag_id="reco_training",
    schedule="@weekly",
    tags=["reco", "training", "tensorflow", "mlflow"],
    doc_md=__doc__,
    **COMMON_DAG_ARGS,
    params={
        **COMMON_PARAMS,
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Epochs",
            description=f"Most passes over the training windows (also capped by {settings.training.max_updates:,} "
            f"updates and {settings.training.train_minutes:g} minutes; early stopping may end sooner). Empty: "
            f"{settings.training.epochs} (RECO_EPOCHS).",
        ),
        "tuned": Param(
            None,
            type=["null", "string"],
            pattern="^[A-Za-z_][A-Za-z0-9_]*$",
            title="Tuned settings",
            description="Train with the hyper-parameters `reco tune --name NAME` stored for a data set "
            "(data_dir/tuned/NAME.json). Empty: RECO_TUNED, else the settings as they are.",
        ),
        "auto_promote": Param(
            True,
            type="boolean",
            title="Promote automatically",
            description="Move `champion` to the new version when it passes the gate. Off: the gate still scores "
            "and tags the version, and the alias is left to a person.",
        ),
    },
)
def reco_training():
    @task(
        outlets=[champion_asset(settings)],
        doc_md="Promotion gate: scores the challenger and the champion on the same hold-out; the challenger becomes "
        "`champion` only if it passes the sanity checks and wins (and auto_promote is on). Tags the version with "
        "the decision and logs the reason.",
    )
    def promote(trained: dict, params: dict | None = None, ds: str | None = None, outlet_events=None) -> dict:
        from jobs import promote as job
        from model_lib.config import parse_ds

        decision = job.gate(
            get_settings(**settings_overrides(params)),
            parse_ds(run_ds(params, ds)),
            trained["version"],
            auto_promote=params["auto_promote"],
        )
        outcome = "is the new champion" if decision["promoted"] else "stays challenger"
        say(f"promotion decision: v{decision['challenger']} {outcome}: {decision['reason']}")
        outlet_events[champion_asset(settings)].extra = decision
        return decision

    trained = training_task(settings)  # the summary (version, metrics) that promote receives
    raw_events_sensor(settings.orchestration) >> sessionize_task() >> trained
    promote(trained) >> report_task()


reco_training()
