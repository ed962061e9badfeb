"""MLflow: the tracking store, the pyfunc form of a Recommender, registration, aliases and promotion.

Aliases, never the deprecated stages: `champion` is what the nightly run reads, `challenger` the newest
candidate. A person promotes by setting the alias in the MLflow UI or with `reco promote --version N`.

The pipeline never unpickles registry content. A version's recommender is plain files (`model_config.json`,
`model.weights.h5`, `vocabulary.parquet`, see serving/recommender.py); registration records their SHA-256 in the
version tag `recommender_sha256`, and `load_recommender` downloads just those files, checks them against it and
builds the network from the JSON config. The pyfunc wrapper (cloudpickled by MLflow) stays in each version for
people who want `mlflow.pyfunc.load_model`; the gate and the nightly Spark workers never call it, so whoever can
register a version cannot run code in the scheduler or the executors through its pickle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.types.schema import ColSpec, Schema

from model_lib.config import Settings
from model_lib.contracts import FIRST_ITEM_INDEX, model_inputs
from model_lib.redaction import redact, split_credentials
from model_lib.serving.recommender import (
    MODEL_CONFIG,
    OPTIONAL_RECOMMENDER_FILES,
    RECOMMENDER_FILES,
    VOCABULARY_FILE,
    IncompatibleModelError,
    Recommender,
)
from model_lib.serving.segments import Segments

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "reco-training"
NO_ITEMS = np.zeros(0, np.int64)  # no older items beyond the given history
CHECKSUM_TAG = "recommender_sha256"
RECOMMENDER_ARTIFACT = "recommender"  # the folder inside each version's artifacts


class RegistryUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached (as opposed to: it answered that something does not exist)."""


def _unavailable(settings: Settings, error: Exception) -> RegistryUnavailable:
    """Raised `from None`: MLflow's own message repeats the URI, password included, and must not reach the logs.

    A store that answered but refused (PERMISSION_DENIED, UNAUTHENTICATED) is reported as that, not as unreachable.
    """
    first_line = redact(str(error).splitlines()[0] if str(error) else type(error).__name__)[:300]
    store = redact(settings.engines.mlflow_tracking_uri)
    code = getattr(error, "error_code", None)
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return RegistryUnavailable(
            f"the MLflow tracking store {store} refused the request ({code}: {first_line}). The credentials this "
            "process uses (MLFLOW_TRACKING_USERNAME / _PASSWORD or _TOKEN) lack the permission on "
            f"{settings.model.model_name} or its experiment: grant it, or use an account that has it, then re-run; "
            "nothing was written."
        )
    return RegistryUnavailable(
        f"the MLflow tracking store {store} cannot be reached ({first_line}). Start it, or point "
        "RECO_MLFLOW_TRACKING_URI at the running server, then re-run; nothing was written."
    )


def store_uri(settings: Settings) -> str:
    """RECO_MLFLOW_TRACKING_URI for MLflow. A tracking server's (http, https) without credentials: its user and
    password go to MLflow's own variables (MLFLOW_TRACKING_USERNAME / _PASSWORD), which only MLflow's HTTP client
    reads, because MLflow prints a server's URI after every run. A database store's (postgresql://user:pw@…) keeps
    them: the database driver reads them from the URI alone, and what this code prints is masked (redaction)."""
    if not settings.engines.mlflow_tracking_uri.startswith(("http://", "https://")):
        return settings.engines.mlflow_tracking_uri
    uri, user, password = split_credentials(settings.engines.mlflow_tracking_uri)
    if user:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return uri


def use_configured_store(settings: Settings) -> None:
    """Tracking and registry both at RECO_MLFLOW_TRACKING_URI. Setting the registry too matters: MLflow would
    otherwise take it from an ambient MLFLOW_REGISTRY_URI and load `models:/` from some other registry."""
    uri = store_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def configure(settings: Settings, experiment_name: str = EXPERIMENT) -> MlflowClient:
    """Points MLflow at the configured store and makes sure the experiment (training's, or the nightly runs')
    keeps artifacts where we say."""
    use_configured_store(settings)
    if settings.engines.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(settings.engines.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        experiment = mlflow.get_experiment_by_name(experiment_name)
    except MlflowException as error:
        raise _unavailable(settings, error) from None
    if experiment is None:
        settings.engines.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(experiment_name, artifact_location=settings.engines.mlflow_artifact_root.as_uri())
    mlflow.set_experiment(experiment_name)
    return MlflowClient()


def recommend_from_raw_ids(recommender: Recommender, frame: pd.DataFrame, seq_len: int, k: int) -> pd.DataFrame:
    """`history` (raw item ids, oldest first) and optional aligned `event_types` and `timestamps` (ISO-8601) per row
    -> top-K raw item ids with scores, whether each is a repeat (an item of the history), the history item that
    explains each (recommender.explaining_items; None for the popular fallback) and the source ('model', or 'popular'
    for a history of unknown items only), under the model's repeat policy."""

    def column(name: str) -> list:
        if name not in frame:
            return [None] * len(frame)
        return [None if value is None else list(value) for value in frame[name]]

    rows = [
        recommender.encode_history(list(history), types, stamps, seq_len)
        for history, types, stamps in zip(frame["history"], column("event_types"), column("timestamps"), strict=True)
    ]
    items, types, gaps = (np.stack(values) for values in zip(*rows, strict=True))
    result = recommender.recommend(model_inputs(items, types, gaps), [NO_ITEMS] * len(items), k)
    ids = recommender.item_ids
    valid = np.isfinite(result.scores)
    return pd.DataFrame(
        {
            "item_ids": [list(ids[row[keep]]) for row, keep in zip(result.items, valid, strict=True)],
            "scores": [list(map(float, row[keep])) for row, keep in zip(result.scores, valid, strict=True)],
            "is_repeat": [list(map(bool, row[keep])) for row, keep in zip(result.repeats, valid, strict=True)],
            "reason_item_ids": [
                [ids[r] if r >= 0 else None for r in row[keep]] for row, keep in zip(result.reasons, valid, strict=True)
            ],
            "source": result.sources,
        }
    )


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """pyfunc: a DataFrame with `history` (list of raw item ids, oldest first) and optionally `event_types` and
    `timestamps` (aligned lists) -> a DataFrame with `item_ids`, `scores` (top-K items under the model's repeat
    policy, best first), `is_repeat`, `reason_item_ids` (aligned with `item_ids`) and `source`. The parameter `k`
    overrides the number of recommendations."""

    def __init__(self, seq_len: int = 50, top_k: int = 20):
        self.seq_len = seq_len
        self.top_k = top_k

    def load_context(self, context):
        self.recommender = Recommender.load(Path(context.artifacts[RECOMMENDER_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", self.top_k))
        return recommend_from_raw_ids(self.recommender, model_input, self.seq_len, k)


def log_recommender(recommender: Recommender, settings: Settings, documents: dict[str, Path] | None = None) -> str:
    """Logs the recommender as a pyfunc model (signature, input example) in the active run; `documents` (the model
    card and its chart) travel inside the model version's artifacts."""
    shown = min(5, recommender.num_items - FIRST_ITEM_INDEX)
    example = pd.DataFrame(
        {
            "history": [list(recommender.item_ids[FIRST_ITEM_INDEX : FIRST_ITEM_INDEX + shown])],
            "event_types": [[recommender.event_types[0]] * shown],
            "timestamps": [[f"2024-01-01T00:0{minute}:00+00:00" for minute in range(shown)]],
        }
    )
    output = recommend_from_raw_ids(recommender, example, settings.sessionize.seq_len, settings.serving.top_k)
    inferred = mlflow.models.infer_signature(example, output, params={"k": settings.serving.top_k})
    signature = mlflow.models.ModelSignature(
        # Event types and timestamps are optional.
        inputs=Schema([ColSpec(c.type, c.name, required=c.name == "history") for c in inferred.inputs.inputs]),
        outputs=inferred.outputs,
        params=inferred.params,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = recommender.save(Path(tmp) / RECOMMENDER_ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=RecommenderModel(seq_len=settings.sessionize.seq_len, top_k=settings.serving.top_k),
            artifacts={
                RECOMMENDER_ARTIFACT: str(folder),
                **{name: str(path) for name, path in (documents or {}).items()},
            },
            signature=signature,
            input_example=example,
        )
    return info.model_uri


def recommender_checksum(folder: Path) -> str:
    """SHA-256 over the recommender's files, names and bytes, in a fixed order; an optional file counts when present
    (so a version registered before it existed keeps its checksum, and removing it from one that has it is seen)."""
    digest = hashlib.sha256()
    for name in RECOMMENDER_FILES:
        path = Path(folder) / name
        if name in OPTIONAL_RECOMMENDER_FILES and not path.exists():
            continue
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _download_recommender(model_uri: str, destination: Path) -> Path:
    """Only the recommender's plain files (never the pickle) of a registered version (`models:/NAME/N`) or of a
    just-logged model (`models:/m-<id>`, read from the logged model's artifact location)."""
    base = model_uri
    if model_uri.startswith("models:/m-"):
        base = mlflow.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    folder = destination / RECOMMENDER_ARTIFACT
    folder.mkdir(parents=True)
    stored = f"{base}/artifacts/{RECOMMENDER_ARTIFACT}"
    present = {Path(info.path).name for info in mlflow.artifacts.list_artifacts(artifact_uri=stored)}
    for name in RECOMMENDER_FILES:
        if name in OPTIONAL_RECOMMENDER_FILES and name not in present:
            continue  # registered before the file existed
        downloaded = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{stored}/{name}", dst_path=str(destination / "download")
        )
        shutil.move(downloaded, folder / name)
    return folder


def register(client: MlflowClient, model_uri: str, settings: Settings, tags: dict[str, str]) -> int:
    """Registers a logged model as the new `challenger`, with the checksum of its recommender files as stored."""
    with tempfile.TemporaryDirectory() as tmp:
        checksum = recommender_checksum(_download_recommender(model_uri, Path(tmp)))
    version = mlflow.register_model(model_uri, settings.model.model_name, tags={**tags, CHECKSUM_TAG: checksum})
    client.set_registered_model_alias(settings.model.model_name, CHALLENGER, version.version)
    return int(version.version)


def register_recommender(
    recommender: Recommender, settings: Settings, run_name: str, tags: dict[str, str], documents=None
) -> int:
    """A run of its own holding the model, registered as the new `challenger` (tests, benchmarks, imports)."""
    client = configure(settings)
    with mlflow.start_run(run_name=run_name):
        uri = log_recommender(recommender, settings, documents)
    return register(client, uri, settings, tags)


def alias_version(client: MlflowClient, settings: Settings, alias: str) -> int | None:
    """The version an alias points to, or None when the alias (or the model) does not exist."""
    try:
        return int(client.get_model_version_by_alias(settings.model.model_name, alias).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise _unavailable(settings, error) from None


def aliased_training_days(settings: Settings) -> dict[str, dt.date]:
    """alias -> the ds the version holding it was trained on (its `ds` tag), for every alias of the model: what
    retention must keep. Empty when the model is not registered yet."""
    client = configure(settings)
    try:
        aliases = client.get_registered_model(settings.model.model_name).aliases
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return {}
        raise _unavailable(settings, error) from None
    days = {}
    for alias, version in aliases.items():
        trained_on = client.get_model_version(settings.model.model_name, str(version)).tags.get("ds")
        if trained_on:
            days[alias] = dt.date.fromisoformat(trained_on)
    return days


def champion_version(settings: Settings) -> int:
    """The version `champion` points to now; a clear error, before any work, when there is none."""
    version = alias_version(configure(settings), settings, CHAMPION)
    if version is None:
        raise LookupError(
            # The URI is not repeated here: it may hold a password.
            f"{settings.model.model_name} has no `{CHAMPION}` alias in the registry at RECO_MLFLOW_TRACKING_URI: run "
            "reco_training (or `reco promote --version N`), then re-run; nothing was written."
        )
    return version


def load_recommender(settings: Settings, version: int) -> Recommender:
    """The Recommender of a registered version (verified_recommender_files). Nothing is unpickled."""
    return Recommender.from_files(verified_recommender_files(settings, version))


def verified_recommender_files(settings: Settings, version: int) -> dict[str, bytes]:
    """The plain files of a registered version, by name, checked against the checksum recorded at registration;
    read only from the configured registry. The nightly job reads them once and ships them to its workers."""
    use_configured_store(settings)
    uri = store_uri(settings)
    client = MlflowClient(uri, uri)
    try:
        recorded = client.get_model_version(settings.model.model_name, str(version)).tags.get(CHECKSUM_TAG)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise LookupError(f"{settings.model.model_name} has no version {version} in the registry") from None
        raise _unavailable(settings, error) from None
    if not recorded:
        raise IncompatibleModelError(
            f"{settings.model.model_name} v{version} has no `{CHECKSUM_TAG}` tag, so its files cannot be verified; "
            "register it with this code (reco_training) before the pipeline loads it"
        )
    with tempfile.TemporaryDirectory() as tmp:
        folder = _download_recommender(f"models:/{settings.model.model_name}/{version}", Path(tmp))
        actual = recommender_checksum(folder)
        if actual != recorded:
            raise IncompatibleModelError(
                f"the files of {settings.model.model_name} v{version} do not match the checksum recorded when it was "
                f"registered ({CHECKSUM_TAG} {recorded[:12]}…, files {actual[:12]}…): they changed since; "
                "refusing to load them"
            )
        return {path.name: path.read_bytes() for path in folder.iterdir()}


@dataclass(frozen=True)
class TrainedOn:
    """What a registered version was trained with, read from its artifacts without loading the network."""

    vocabulary: pd.DataFrame
    event_types: list[str]
    segments: Segments | None  # its user segments (None for versions registered before segments existed)

    @classmethod
    def of_files(cls, files: dict[str, bytes]) -> TrainedOn:
        """From the version's vocabulary.parquet and model_config.json (bytes by file name)."""
        vocabulary = pd.read_parquet(io.BytesIO(files[VOCABULARY_FILE]))
        config = json.loads(files[MODEL_CONFIG])
        segments = Segments.from_config(config["segments"]) if "segments" in config else None
        return cls(vocabulary, config["event_types"], segments)


def trained_on(settings: Settings, version: int) -> TrainedOn:
    """The vocabulary, event types and user segments of a registered version, read from its artifacts without
    loading the network (so a run can check them before any scoring)."""
    use_configured_store(settings)
    folder = f"models:/{settings.model.model_name}/{version}/artifacts/{RECOMMENDER_ARTIFACT}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            files = {
                name: Path(
                    mlflow.artifacts.download_artifacts(artifact_uri=f"{folder}/{name}", dst_path=tmp)
                ).read_bytes()
                for name in (VOCABULARY_FILE, MODEL_CONFIG)
            }
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise LookupError(f"{settings.model.model_name} has no version {version} in the registry") from None
            raise _unavailable(settings, error) from None
    return TrainedOn.of_files(files)


def set_champion(client: MlflowClient, settings: Settings, version: int, reason: str) -> None:
    previous = alias_version(client, settings, CHAMPION)
    client.set_registered_model_alias(settings.model.model_name, CHAMPION, str(version))
    client.set_model_version_tag(settings.model.model_name, str(version), "promotion", reason)
    if previous is not None and previous != version:
        client.set_model_version_tag(settings.model.model_name, str(version), "previous_champion", str(previous))
