"""The data contracts written in the README are the ones the code writes."""

from pathlib import Path

from model_lib.contracts import REASON_CODES, SEQUENCE_COLUMNS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def documented_columns(title: str) -> list[str]:
    """The first-column names of the table that follows the paragraph starting with **title**."""
    section = README[README.index(f"**{title}**") :]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table_end = section.index("\n\n", section.index("|---"))
    in_table = [line for line in rows if section.index(line) < table_end]
    return [name.strip().strip("`") for line in in_table for name in line.split("|")[1].split(",")]


def test_sequence_columns_are_documented_in_order():
    assert documented_columns("Sequences") == SEQUENCE_COLUMNS


def test_quarantine_reasons_are_documented_in_checking_order():
    quarantine = documented_columns("Quarantine")
    assert quarantine == ["reason", "raw_line", "raw_bytes", "source_file"]
    reason_row = next(line for line in README.splitlines() if line.startswith("| `reason` | string"))
    positions = [reason_row.index(f"`{code}`") for code in REASON_CODES]
    assert positions == sorted(positions)


def test_recommendation_columns_are_documented_with_their_sql_types_in_order():
    """The one recommendation-row definition (contracts.RECOMMENDATION_FIELDS) is what the README's SQL shows."""
    import re

    from model_lib.contracts import RECOMMENDATION_FIELDS
    from model_lib.storage.warehouse import RECOMMENDATIONS_DDL

    block = README[README.index("recommendations(ds DATE") : README.index("recommendation_runs(")]
    code = re.sub(r"--[^\n]*", "", block)
    documented = re.findall(r"(\w+) (DATE|VARCHAR|INTEGER|DOUBLE PRECISION)", code)
    assert documented == [(name, sql_type) for name, _, sql_type, _ in RECOMMENDATION_FIELDS]
    assert all(f"{name} {sql_type}" in RECOMMENDATIONS_DDL for name, sql_type in documented)


def test_the_catalogue_size_covers_every_index_including_free_ones():
    import pandas as pd

    from model_lib.contracts import FIRST_ITEM_INDEX
    from model_lib.data.vocabulary import catalogue_size, vocabulary_item_ids

    with_a_free_index = pd.DataFrame({"item_id": ["a", "c"], "item_index": [2, 4], "count": [3, 1]})
    assert catalogue_size(with_a_free_index) == 5
    assert vocabulary_item_ids(with_a_free_index).tolist() == ["", "", "a", "", "c"]
    assert catalogue_size(with_a_free_index.iloc[:0]) == FIRST_ITEM_INDEX  # padding and unknown only
