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


def documented_tables() -> dict[str, list[tuple[str, str]]]:
    """The README's "Warehouse tables" SQL: table name -> [(column, SQL type)] in order, comments dropped."""
    import re

    section = README[README.index("## Warehouse tables") :]
    block = section[section.index("```sql") + 6 : section.index("```", section.index("```sql") + 6)]
    code = re.sub(r"--[^\n]*", "", block)
    parts = re.split(r"^(\w+)\(", code, flags=re.M)[1:]
    types = r"(\w+) (DATE|VARCHAR|INTEGER|DOUBLE PRECISION|BIGINT|TIMESTAMP)(\[\])?"
    return {
        name: [(column, sql + array) for column, sql, array in re.findall(types, body)]
        for name, body in zip(parts[::2], parts[1::2], strict=True)
    }


def test_every_nightly_table_is_documented_with_its_sql_types_in_order():
    """Each table's one definition (contracts.NIGHTLY_TABLES) is what the README's SQL shows and what the DDL makes."""
    from model_lib.contracts import NIGHTLY_TABLES
    from model_lib.storage.warehouse import table_ddl

    documented = documented_tables()
    for table in NIGHTLY_TABLES:
        assert documented[table.name] == [(name, sql_type) for name, _, sql_type, _ in table.fields], table.name
        assert all(f"{name} {sql_type}" in table_ddl(table, table.name) for name, sql_type in documented[table.name])
    assert {"recommendation_runs", "published_tables"} <= set(documented)


def test_the_catalogue_size_covers_every_index_including_free_ones():
    import pandas as pd

    from model_lib.contracts import FIRST_ITEM_INDEX
    from model_lib.data.vocabulary import catalogue_size, vocabulary_item_ids

    with_a_free_index = pd.DataFrame({"item_id": ["a", "c"], "item_index": [2, 4], "count": [3, 1]})
    assert catalogue_size(with_a_free_index) == 5
    assert vocabulary_item_ids(with_a_free_index).tolist() == ["", "", "a", "", "c"]
    assert catalogue_size(with_a_free_index.iloc[:0]) == FIRST_ITEM_INDEX  # padding and unknown only
