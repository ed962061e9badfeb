import datetime as dt

import pytest
from pydantic import ValidationError

from model_lib.config import check_identifier, get_settings, parse_ds


def test_defaults_live_under_one_data_folder(tmp_path):
    settings = get_settings(data_dir=tmp_path)
    assert settings.lake_dir == tmp_path / "lake"
    assert settings.warehouse_url == f"duckdb:///{tmp_path / 'warehouse' / 'reco.duckdb'}"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert (
        settings.sequences_dir(dt.date(2024, 1, 2)) == tmp_path / "lake" / "sessionized" / "ds=2024-01-02" / "sequences"
    )


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("RECO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECO_SEQ_LEN", "77")
    monkeypatch.setenv("RECO_EVENT_TYPES", '["view", "buy"]')
    settings = get_settings()
    assert settings.seq_len == 77
    assert settings.event_types == ["view", "buy"]
    assert settings.lake_dir == tmp_path / "lake"


@pytest.mark.parametrize(
    "field,value",
    [
        ("top_k", -1),
        ("seq_len", 0),
        ("warehouse_url", "mysql://x"),
        ("max_quarantine_share", 1.5),
        ("softmax", "hierarchical"),
        ("event_type_loss_weight", -0.1),
        ("sampled_negatives", 0),
        ("sessionize_mode", "sometimes"),
        ("max_vocab_size", 0),
    ],
)
def test_bad_configuration_is_rejected_before_any_work(field, value):
    with pytest.raises(ValidationError):
        get_settings(**{field: value})


def test_attention_heads_must_split_the_hidden_state():
    with pytest.raises(ValidationError, match="attention heads"):
        get_settings(attention_blocks=2, hidden_dim=64, attention_heads=3)
    assert get_settings(attention_blocks=0, hidden_dim=64, attention_heads=3).attention_heads == 3  # unused
    with pytest.raises(ValidationError):
        get_settings(attention_blocks=-1)


def test_ds_is_parsed_as_a_date():
    assert parse_ds("2003-02-28") == dt.date(2003, 2, 28)
    assert parse_ds(dt.datetime(2003, 2, 28, 5)) == dt.date(2003, 2, 28)
    for bad in ["2003-02-30", "28/02/2003", "2003-02-28; DROP TABLE x", "../../etc"]:
        with pytest.raises(ValueError, match="bad ds"):
            parse_ds(bad)


def test_only_plain_identifiers_reach_sql():
    assert check_identifier("recommendations") == "recommendations"
    for bad in ["recs; drop", "1abc", "a-b", ""]:
        with pytest.raises(ValueError):
            check_identifier(bad)


def test_sampled_softmax_switches_on_for_big_catalogues():
    settings = get_settings(sampled_softmax_min_items=1000)
    assert not settings.uses_sampled_softmax(1000) and settings.uses_sampled_softmax(1001)
    assert get_settings(softmax="sampled").uses_sampled_softmax(10)
    assert not get_settings(softmax="full", sampled_softmax_min_items=1).uses_sampled_softmax(10**6)
