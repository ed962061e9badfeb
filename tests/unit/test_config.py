import datetime as dt

import pytest
from pydantic import ValidationError

from model_lib.config import GROUP_OF_FIELD, GROUPS, FlatEnvironment, Settings, check_identifier, get_settings, parse_ds


def test_defaults_live_under_one_data_folder(tmp_path):
    settings = get_settings(data_dir=tmp_path)
    assert settings.lake.lake_dir == tmp_path / "lake"
    assert settings.engines.warehouse_url == f"duckdb:///{tmp_path / 'warehouse' / 'reco.duckdb'}"
    assert settings.engines.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert (
        settings.lake.sequences_dir(dt.date(2024, 1, 2))
        == tmp_path / "lake" / "sessionized" / "ds=2024-01-02" / "sequences"
    )


def test_every_field_keeps_its_flat_environment_name_and_lands_in_its_group(monkeypatch):
    for field, group in GROUP_OF_FIELD.items():
        annotation = GROUPS[group].model_fields[field].annotation
        monkeypatch.setenv(f"RECO_{field.upper()}", '["x"]' if "list" in str(annotation) else f"value-of-{field}")
    found = FlatEnvironment(Settings)()
    assert set(found) == set(GROUPS)
    for field, group in GROUP_OF_FIELD.items():
        assert found[group][field] in (["x"], f"value-of-{field}"), field
    assert sum(len(fields) for fields in found.values()) == len(GROUP_OF_FIELD)


def test_explicit_values_win_over_the_environment_and_updates_are_validated(monkeypatch):
    monkeypatch.setenv("RECO_SEQ_LEN", "77")
    monkeypatch.setenv("RECO_TOP_K", "30")
    settings = get_settings(seq_len=12)
    assert (settings.sessionize.seq_len, settings.serving.top_k) == (12, 30)
    assert settings.explicit_fields() >= {"seq_len", "top_k"} and "hidden_dim" not in settings.explicit_fields()
    longer = settings.updated(seq_len=20, hidden_dim=16)
    assert (longer.sessionize.seq_len, longer.model.hidden_dim, longer.serving.top_k) == (20, 16, 30)
    assert settings.sessionize.seq_len == 12  # a copy
    with pytest.raises(ValidationError):
        settings.updated(seq_len=0)
    with pytest.raises(ValueError, match="unknown settings"):
        settings.updated(sequence_length=20)


def test_a_group_stands_alone_with_the_same_defaults():
    settings = get_settings()
    for group, model in GROUPS.items():
        if group not in ("lake", "engines"):  # their defaults are filled from data_dir by Settings
            assert model() == getattr(settings, group), group
    assert settings.flat()["seq_len"] == settings.sessionize.seq_len


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("RECO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECO_SEQ_LEN", "77")
    monkeypatch.setenv("RECO_EVENT_TYPES", '["view", "buy"]')
    settings = get_settings()
    assert settings.sessionize.seq_len == 77
    assert settings.sessionize.event_types == ["view", "buy"]
    assert settings.lake.lake_dir == tmp_path / "lake"


@pytest.mark.parametrize(
    "field,value",
    [
        ("top_k", -1),
        ("top_k", 501),  # MAX_TOP_K: the nightly table's and the DAG form's bound
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


@pytest.mark.parametrize("k", ["0", "-3", "501"])
def test_the_recommend_jobs_k_is_bounded_before_any_work(k, capsys):
    from jobs.recommend import main

    with pytest.raises(SystemExit) as stopped:
        main(["--ds", "2003-02-28", "--k", k])
    assert stopped.value.code == 2 and "--k must be between 1 and 500" in capsys.readouterr().err


def test_attention_heads_must_split_the_hidden_state():
    with pytest.raises(ValidationError, match="attention heads"):
        get_settings(attention_blocks=2, hidden_dim=64, attention_heads=3)
    assert get_settings(attention_blocks=0, hidden_dim=64, attention_heads=3).model.attention_heads == 3  # unused
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
    assert not settings.model.uses_sampled_softmax(1000) and settings.model.uses_sampled_softmax(1001)
    assert get_settings(softmax="sampled").model.uses_sampled_softmax(10)
    assert not get_settings(softmax="full", sampled_softmax_min_items=1).model.uses_sampled_softmax(10**6)
