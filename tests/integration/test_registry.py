"""The registered pyfunc model in a real MLflow store: raw ids in and out, timestamps, K beyond the catalogue,
the model card inside the version, and models of another format refused."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from helpers.sequence_files import register_tiny_model
from model_lib.contracts import model_inputs


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from model_lib.config import get_settings

    tmp_path = tmp_path_factory.mktemp("registry")
    settings = get_settings(data_dir=tmp_path / "data", seq_len=8)
    card = tmp_path / "model_card.md"
    card.write_text("# Model card\n")
    version, vocabulary = register_tiny_model(settings, documents={"model_card": card})
    return settings, version, vocabulary, mlflow.pyfunc.load_model(f"models:/{settings.model.model_name}/{version}")


def test_the_pyfunc_takes_histories_with_types_and_timestamps(served):
    settings, version, vocabulary, model = served
    assert {spec.name for spec in model.metadata.signature.inputs} == {"history", "event_types", "timestamps"}
    history = ["i5", "i9", "i4"]
    quick = ["2024-01-01T10:00:00+00:00", "2024-01-01T10:00:01+00:00", "2024-01-01T10:00:02+00:00"]
    slow = ["2024-01-01T10:00:00+00:00", "2024-01-03T10:00:00+00:00", "2024-01-09T10:00:00+00:00"]
    frame = pd.DataFrame(
        {"history": [history, history], "event_types": [["view"] * 3] * 2, "timestamps": [quick, slow]}
    )
    out = model.predict(frame, params={"k": 5})
    assert out["source"].tolist() == ["model", "model"]
    for row in range(2):
        items = list(out["item_ids"][row])
        assert len(set(items)) == 5 and not set(items) & set(history)
        assert list(out["is_repeat"][row]) == [False] * 5
        assert list(out["scores"][row]) == sorted(out["scores"][row], reverse=True)
        assert len(out["reason_item_ids"][row]) == 5 and set(out["reason_item_ids"][row]) <= set(history)
    assert out["scores"][0] != out["scores"][1], "the time gaps must reach the model"


def test_k_beyond_the_catalogue_returns_every_unseen_item_once(served):
    settings, version, vocabulary, model = served
    out = model.predict(pd.DataFrame({"history": [["i5", "i9", "nope"]]}), params={"k": 500})
    items = list(out["item_ids"][0])
    assert len(items) == len(set(items)) == len(vocabulary) - 2
    assert not {"i5", "i9", "nope", ""} & set(items)


def test_a_history_of_unknown_items_gets_the_most_popular(served):
    settings, version, vocabulary, model = served
    out = model.predict(pd.DataFrame({"history": [["nope", "never"]]}), params={"k": 3})
    assert list(out["item_ids"][0]) == ["i2", "i3", "i4"] and out["source"][0] == "popular"
    assert list(out["reason_item_ids"][0]) == [None] * 3


def test_a_model_trained_to_allow_repeats_serves_seen_items_marked_as_repeats(served):
    from model_lib.ranking import ALLOW_REPEATS, RepeatPolicy

    settings = served[0]
    version, _ = register_tiny_model(settings, policy=RepeatPolicy(ALLOW_REPEATS))
    model = mlflow.pyfunc.load_model(f"models:/{settings.model.model_name}/{version}")
    out = model.predict(pd.DataFrame({"history": [["i5", "i9", "i4"]]}), params={"k": 500})
    items, repeats = list(out["item_ids"][0]), list(out["is_repeat"][0])
    assert len(items) == len(set(items)) == 28  # every catalogue item, the three seen ones included
    assert {item for item, repeat in zip(items, repeats, strict=True) if repeat} == {"i5", "i9", "i4"}


def test_the_model_card_travels_with_the_version(served):
    settings, version, vocabulary, model = served
    folder = mlflow.artifacts.download_artifacts(f"models:/{settings.model.model_name}/{version}")
    assert (pd.io.common.Path(folder) / "artifacts" / "model_card.md").read_text().startswith("# Model card")


def test_a_model_in_another_format_is_refused(served, tmp_path):
    from model_lib.serving.recommender import IncompatibleModelError, Recommender

    settings, version, vocabulary, model = served
    folder = model.unwrap_python_model().recommender.save(tmp_path / "saved")
    config = json.loads((folder / "model_config.json").read_text())
    config["format"] = 1
    (folder / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(IncompatibleModelError, match="format 1"):
        Recommender.load(folder)


def test_timestamps_give_the_same_gap_buckets_as_the_spark_job(spark):
    from pyspark.sql import functions as F

    from model_lib.data.events import gap_bucket
    from model_lib.serving.recommender import gap_buckets

    gaps = [0, 1, 2, 3, 7, 8, 59, 60, 3600, 86_400, 10**7, 10**9]
    stamps = np.cumsum([0, *gaps]).astype("datetime64[s]").astype(str).tolist()
    frame = spark.createDataFrame([(float(g),) for g in gaps], "gap double")
    expected = [r[0] for r in frame.select(gap_bucket(F.col("gap"), 20)).collect()]
    assert gap_buckets(stamps, 20).tolist() == [1, *expected]


def test_models_load_only_from_the_configured_registry(served, tmp_path, monkeypatch):
    """MLflow honours MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI from the environment; a worker whose environment
    points elsewhere must still read the champion, its vocabulary and its weights from RECO_MLFLOW_TRACKING_URI."""
    from model_lib.config import get_settings
    from model_lib.serving import registry

    # Elsewhere: the module's store, whose model (the same name, over 30 items) is made champion there.
    elsewhere, other_version, _, _ = served
    registry.set_champion(registry.configure(elsewhere), elsewhere, other_version, "test")
    configured = get_settings(data_dir=tmp_path / "configured", seq_len=8)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere.engines.mlflow_tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", elsewhere.engines.mlflow_tracking_uri)

    with pytest.raises(LookupError, match="no `champion` alias"):
        registry.champion_version(configured)
    version, vocabulary = register_tiny_model(configured, num_items=12)
    registry.set_champion(registry.configure(configured), configured, version, "test")

    assert registry.champion_version(configured) == version
    trained_vocabulary = registry.trained_on(configured, version).vocabulary
    assert trained_vocabulary["item_id"].tolist() == vocabulary["item_id"].tolist()
    recommender = registry.load_recommender(configured, version)
    assert recommender.num_items == 12 and set(recommender.item_ids[2:]) == set(vocabulary["item_id"])
    with pytest.raises(LookupError, match=f"has no version {version + 1}"):
        registry.trained_on(configured, version + 1)


@pytest.mark.parametrize(
    "code, said",
    [("PERMISSION_DENIED", "refused the request (PERMISSION_DENIED"), ("TEMPORARILY_UNAVAILABLE", "cannot be reached")],
)
def test_a_registry_that_refuses_is_not_reported_as_unreachable(tmp_path, code, said):
    """An MLflow server that answered "permission denied" is up: telling the operator to start it would mislead."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    from model_lib.config import get_settings
    from model_lib.serving.registry import _unavailable

    settings = get_settings(data_dir=tmp_path, mlflow_tracking_uri="https://ops:hunter2@mlflow.internal")
    error = MlflowException("API request failed for user ops", error_code=getattr(databricks_pb2, code))
    message = str(_unavailable(settings, error))
    assert said in message and "hunter2" not in message and "https://ops:***@mlflow.internal" in message
    assert ("Start it" in message) == (code != "PERMISSION_DENIED")


def test_a_version_without_the_numpy_encoder_loads_with_tensorflow_under_its_recorded_checksum(tmp_path):
    """Versions registered before encoder.npz existed, and models it does not cover (self-attention blocks), have
    only the Keras weights: they still download, verify and score, with TensorFlow. The others load in numpy."""
    from model_lib.config import get_settings
    from model_lib.model.network import NextItemModel
    from model_lib.model.numpy_encoder import ENCODER_FILE, NumpyEncoder
    from model_lib.serving import registry

    settings = get_settings(data_dir=tmp_path / "data", seq_len=8)
    plain, _ = register_tiny_model(settings)
    blocks, _ = register_tiny_model(settings, attention_blocks=1)
    stored = f"models:/{settings.model.model_name}/{{}}/artifacts/{registry.RECOMMENDER_ARTIFACT}"
    files = {
        version: {info.path.rsplit("/", 1)[-1] for info in mlflow.artifacts.list_artifacts(stored.format(version))}
        for version in (plain, blocks)
    }
    assert ENCODER_FILE in files[plain] and ENCODER_FILE not in files[blocks]

    assert isinstance(registry.load_recommender(settings, plain).model, NumpyEncoder)
    with_tensorflow = registry.load_recommender(settings, blocks)
    assert isinstance(with_tensorflow.model, NextItemModel) and with_tensorflow.model.attention_blocks == 1
    items = np.array([[0, 0, 4, 5, 6, 7, 8, 9]], np.int32)
    scores = with_tensorflow.score(model_inputs(items, (items > 0) * 1, (items > 0) * 3))
    assert np.isfinite(scores[0, 2:]).all()
