"""The documentation is current: its generated parts equal what the code generates now, every file, test and page it
names exists, and the analysts' example SQL runs against the tables the contracts create."""

import re
from pathlib import Path

import pytest

from jobs import docs
from jobs.docs import MARK

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    ROOT / "bench" / "README.md",
    ROOT / "docker" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
# A path in backticks that starts at one of the project's folders, optionally with ::test_name (maybe cut with "…").
NAMED_PATH = re.compile(r"`((?:tests|model_lib|jobs|dags|bench|docker|docs)/[\w./-]+)(?:::(\w+)[^`]*)?`")
LINK = re.compile(r"\]\(([\w./-]+\.md)(?:#[\w-]+)?\)")
# Written at set-up, never committed (git-ignored), so a clean clone does not hold them.
MADE_AT_SET_UP = ("docker/secrets/", "docker/.env")


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda page: page.name)
def test_every_generated_part_is_current(page):
    assert docs.render(page) == page.read_text(), f"{page.name} is out of date: run `.venv/bin/reco docs`"


def test_the_generated_parts_cover_every_setting_table_and_command():
    from jobs.cli import BENCHMARKS
    from model_lib.config.groups import GROUPS
    from model_lib.contracts import WAREHOUSE_TABLES

    configuration = (ROOT / "docs" / "configuration.md").read_text()
    for group in GROUPS.values():
        comments = docs.field_comments(group)
        for name in group.model_fields:
            assert comments.get(name), f"{name} has no comment in model_lib/config/groups.py to document it by"
            assert f"| `RECO_{name.upper()}` |" in configuration
    warehouse = (ROOT / "docs" / "warehouse.md").read_text()
    assert all(f"### `{table.name}`" in warehouse for table in WAREHOUSE_TABLES)
    commands = (ROOT / "docs" / "commands.md").read_text()
    assert all(f"### `reco bench {name}`" in commands for name in BENCHMARKS)
    assert "### `reco sessionize`" in commands and "--mode {auto,full,incremental}" in commands


def test_a_stale_page_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- generated: tables -->\nold text\n<!-- end generated: tables -->\n")
    assert "old text" not in docs.render(page) and "### `recommendations`" in docs.render(page)


def test_the_comment_beside_a_field_is_its_description():
    from pydantic import BaseModel

    class Example(BaseModel):
        # Above the first,
        # on two lines.
        first: int = 1
        second: int = 2  # beside the second
        third: int = 3

    assert docs.field_comments(Example) == {
        "first": "Above the first, on two lines.",
        "second": "beside the second",
        "third": "",
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_file_test_and_page_a_page_names_exists(page):
    text = page.read_text()
    for path, test in NAMED_PATH.findall(text):
        if path.startswith(MADE_AT_SET_UP):
            continue
        target = ROOT / path.rstrip(".")
        assert target.exists(), f"{page.name} names {path}, which does not exist"
        if test:
            source = target.read_text()
            assert re.search(rf"def {test}", source), f"{page.name} names {path}::{test}, which does not exist"
    for link in LINK.findall(text):
        assert (page.parent / link).exists(), f"{page.name} links {link}, which does not exist"


def test_the_analysts_example_queries_run_on_the_tables_the_contracts_create(tmp_path):
    import duckdb

    from model_lib.contracts import WAREHOUSE_TABLES
    from model_lib.storage.warehouse import table_ddl

    text = (ROOT / "docs" / "warehouse.md").read_text()
    queries = [
        query
        for block in re.findall(r"```sql\n(.*?)```", text, re.S)
        for query in re.sub(r"--[^\n]*", "", block).split(";")
        if query.strip()
    ]
    assert len(queries) >= 6
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    for table in WAREHOUSE_TABLES:
        connection.execute(table_ddl(table, table.name))
    for query in queries:
        connection.execute(query).fetchall()


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make demo") < 400 and readme.index("make test") < 400
    assert len(readme.splitlines()) <= 200
    assert not re.search(r"\b[0-9a-f]{7}\b", readme), "the README names a commit: history goes to bench/results/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_page_is_a_diary(page):
    """The record says what holds now: no issue numbers, no "this session", no commit hashes outside the generated
    results (history lives in bench/results/*.jsonl and the git log)."""
    text = MARK.sub("", page.read_text()) if page.name != "ACCURACY.md" else ""
    assert not re.search(r"\b(issue|stop) \d+|this session|found today", text, re.I), page.name
