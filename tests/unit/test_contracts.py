"""The data contracts written in docs/your-data.md are the ones the code writes."""

from pathlib import Path

from model_lib.contracts import REASON_CODES, SEQUENCE_COLUMNS

README = (Path(__file__).resolve().parents[2] / "docs" / "your-data.md").read_text()


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


def test_every_warehouse_table_is_created_from_its_contract_in_column_order():
    """The DDL, the Spark schema and docs/warehouse.md (generated, tests/unit/test_docs.py) come from one Table."""
    from model_lib.contracts import NIGHTLY_TABLES, WAREHOUSE_TABLES
    from model_lib.storage.warehouse import table_ddl

    assert {"recommendation_runs", "published_tables"} <= {table.name for table in WAREHOUSE_TABLES}
    for table in WAREHOUSE_TABLES:
        ddl = table_ddl(table, table.name)
        positions = [ddl.index(f"    {column.name} {column.sql_type}") for column in table.fields]
        assert positions == sorted(positions), table.name
        assert all(column.description for column in table.fields) and table.grain, table.name
    for table in NIGHTLY_TABLES:
        assert table.spark_schema.split(", ")[0] == "ds string" and table.columns[-1] == "model_version"


def test_the_catalogue_size_covers_every_index_including_free_ones():
    import pandas as pd

    from model_lib.contracts import FIRST_ITEM_INDEX
    from model_lib.data.vocabulary import catalogue_size, vocabulary_item_ids

    with_a_free_index = pd.DataFrame({"item_id": ["a", "c"], "item_index": [2, 4], "count": [3, 1]})
    assert catalogue_size(with_a_free_index) == 5
    assert vocabulary_item_ids(with_a_free_index).tolist() == ["", "", "a", "", "c"]
    assert catalogue_size(with_a_free_index.iloc[:0]) == FIRST_ITEM_INDEX  # padding and unknown only


def test_every_coverage_divides_by_the_items_of_the_vocabulary_the_lists_come_from():
    """MLflow's coverage_K and the warehouse's coverage share one denominator: free indices are no items."""
    import numpy as np
    import pandas as pd

    from model_lib.data.vocabulary import catalogue_items
    from model_lib.evaluation.metrics import evaluate_holdout

    with_a_free_index = pd.DataFrame({"item_id": ["a", "c"], "item_index": [2, 4], "count": [3, 1]})
    assert catalogue_items(with_a_free_index) == 2
    items = np.array([[2, 2]], np.int32)
    inputs = {"items": items, "event_types": np.ones_like(items), "gaps": np.ones_like(items)}
    scores = lambda batch: np.array([[0, 0, 0, -np.inf, 1.0]], np.float32)  # noqa: E731
    found = evaluate_holdout(scores, inputs, [np.zeros(0, np.int64)], np.array([4]), 5, (1,), catalogue_items=2)
    assert found["coverage_1"] == 0.5 and found["hr_1"] == 1.0  # item 4 of the 2 real items
