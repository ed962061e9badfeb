"""`reco docs`: the reference parts of docs/ generated from the code, so they cannot drift from it.

A page holds hand-written prose and, between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->`, a part this
module writes from one source of truth:
- `settings` (docs/configuration.md): every field of the settings classes (model_lib/config/groups.py), its
  environment variable, its default and the comment written beside it;
- `tables` (docs/warehouse.md): every warehouse table of model_lib/contracts.py with its grain, key, columns and
  caveats;
- `commands` (docs/commands.md): every `reco` command's --help;
- `results` (docs/results.md): the latest JSON line of each benchmark under bench/results/.
`reco docs` rewrites those parts; `reco docs --check` exits 1 naming the pages that are out of date (a test runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import re
import sys
from pathlib import Path

from model_lib.config import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
MARK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.S)


# --- settings ---------------------------------------------------------------------------------------------------------


def field_comments(model: type) -> dict[str, str]:
    """The comment written beside each field of a settings class: the comment block right above it and its trailing
    comment (a field without either has no description, which the docs test refuses)."""
    comments: dict[str, str] = {}
    block: list[str] = []
    for line in inspect.getsource(model).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            block.append(text.lstrip("# "))
            continue
        if match := re.match(r"(\w+): [^=]+=.*?(?:  # (.*))?$", text):
            comments[match.group(1)] = " ".join([*block, match.group(2) or ""]).strip()
        block = []
    return comments


def _default(field) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, Path):
        return f"`{value.relative_to(PROJECT_ROOT)}`" if value.is_relative_to(PROJECT_ROOT) else f"`{value}`"
    if value is None:
        return "derived"
    return f"`{json.dumps(value)}`" if isinstance(value, list | str | bool) else f"{value:,}"


def settings_reference() -> str:
    from model_lib.config.groups import GROUPS

    parts = []
    for group, model in GROUPS.items():
        comments = field_comments(model)
        parts += [f"### `{group}`", "", inspect.getdoc(model) or "", ""]
        parts += ["| variable | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            meaning = comments.get(name, "").replace("|", "\\|")
            parts.append(f"| `RECO_{name.upper()}` | {_default(field)} | {meaning} |")
        parts.append("")
    return "\n".join(parts)


# --- warehouse tables -------------------------------------------------------------------------------------------------


def tables_reference() -> str:
    from model_lib.contracts import WAREHOUSE_TABLES

    parts = []
    for table in WAREHOUSE_TABLES:
        key = ", ".join(table.key) if table.key else "none (a log)"
        parts += [f"### `{table.name}`", "", table.description, "", f"Grain: {table.grain}. Key: {key}.", ""]
        parts += ["| column | SQL type | NULL | meaning |", "|---|---|---|---|"]
        for column in table.fields:
            nullable = "yes" if column.nullable else "no"
            parts.append(f"| `{column.name}` | {column.sql_type} | {nullable} | {column.description} |")
        parts += ["", *[f"- {caveat}" for caveat in table.caveats], ""] if table.caveats else [""]
    return "\n".join(parts)


# --- commands ---------------------------------------------------------------------------------------------------------


def command_help(argv: list[str]) -> str:
    """What `reco ARGV --help` prints, 100 columns wide, run in this process (argparse exits after printing)."""
    from jobs.cli import main

    out = io.StringIO()
    saved_argv, saved_columns = sys.argv, os.environ.get("COLUMNS")
    sys.argv, os.environ["COLUMNS"] = ["reco"], "100"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([*argv, "--help"])
    finally:
        sys.argv = saved_argv
        if saved_columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = saved_columns
    return out.getvalue().rstrip()


def commands_reference() -> str:
    from jobs.cli import BENCHMARKS, build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    names = [name for name in commands.choices if name != "bench"] + [f"bench {name}" for name in sorted(BENCHMARKS)]
    parts = []
    for name in names:
        parts += [f"### `reco {name}`", "", "```text", command_help(name.split()), "```", ""]
    return "\n".join(parts)


# --- benchmark results ------------------------------------------------------------------------------------------------


def _shown(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def results_reference() -> str:
    """Per benchmark, its newest line per data set (or history size): when, at which commit, on how many cores, and
    its headline figures (bench/results.HEADLINES); every figure of every run stays in the JSON lines."""
    from bench import results

    parts = []
    for name, headline in results.HEADLINES.items():
        lines = [
            line
            for line in results.read(results.FOLDER / f"{name}.jsonl")
            if any(results.figure(line, path) is not None for _, path in headline)
        ]
        parts += [f"### `reco bench {name}`", ""]
        if not lines:
            parts += ["No recorded run yet.", ""]
            continue
        newest = {results.line_key(line): line for line in lines}
        parts += ["| run | recorded | commit | cores | " + " | ".join(label for label, _ in headline) + " |"]
        parts += ["|---" * (4 + len(headline)) + "|"]
        for key, line in newest.items():
            figures = " | ".join(_shown(results.figure(line, path)) for _, path in headline)
            when = line.get("recorded_at", "")[:10]
            parts.append(f"| {key} | {when} | {line.get('commit', '')} | {line.get('cores', '')} | {figures} |")
        parts += ["", f"All {len(lines)} runs: `bench/results/{name}.jsonl`.", ""]
    return "\n".join(parts)


GENERATORS = {
    "settings": settings_reference,
    "tables": tables_reference,
    "commands": commands_reference,
    "results": results_reference,
}


def render(page: Path) -> str:
    """The page with each generated part written afresh."""
    text = page.read_text()
    return MARK.sub(lambda m: m.group(1) + GENERATORS[m.group(2)]() + "\n" + m.group(4), text)


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="reco docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated part is out of date")
    args = parser.parse_args(argv)
    stale = []
    for page in sorted(DOCS.glob("*.md")):
        fresh = render(page)
        if fresh != page.read_text():
            stale.append(str(page.relative_to(PROJECT_ROOT)))
            if not args.check:
                page.write_text(fresh)
    print(("out of date: " if args.check else "rewritten: ") + (", ".join(stale) or "none"))
    if args.check and stale:
        sys.exit(1)
    return stale


if __name__ == "__main__":
    main()
