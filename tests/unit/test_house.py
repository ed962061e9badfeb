"""The house rules a reader relies on: short functions and modules in the code a newcomer reads, and a clean lint."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READ_BY_NEWCOMERS = ("model_lib", "jobs", "dags", "bench", "tests/helpers")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def sizes(folders=READ_BY_NEWCOMERS) -> tuple[dict[str, int], dict[str, int]]:
    """-> (lines of every module, lines of every function and method, by 'path:name')."""
    modules, functions = {}, {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text, name = path.read_text(), str(path.relative_to(ROOT))
            modules[name] = len(text.splitlines())
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    functions[f"{name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return modules, functions


def test_no_function_over_60_lines_and_no_module_over_400():
    modules, functions = sizes()
    assert {name: n for name, n in modules.items() if n > MAX_MODULE_LINES} == {}
    assert {name: n for name, n in functions.items() if n > MAX_FUNCTION_LINES} == {}
    assert len(modules) > 50 and max(functions.values()) > 20  # the walk found the code


def test_the_code_is_lint_clean():
    ruff = Path(sys.executable).parent / "ruff"
    found = subprocess.run([str(ruff), "check", *READ_BY_NEWCOMERS, "tests"], cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0, found.stdout[-3000:]
