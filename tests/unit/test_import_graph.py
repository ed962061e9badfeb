"""The library's place in the house: model_lib sits below jobs/ and dags/, its packages import downwards only (the
layers written in model_lib/__init__.py), and its modules form no import cycle.

Every import counts, the ones inside functions too (a deferred import still ties the modules together).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "model_lib"
ABOVE_THE_LIBRARY = ("jobs", "dags", "dag_parts", "airflow", "bench", "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names; `from model_lib import x` names model_lib.x when it exists)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def library_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in LIBRARY.rglob("*.py")}
    return {name: imported_modules(path) & set(modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None; depth-first search with three colours."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for neighbour in sorted(graph[node]):
            if state.get(neighbour) == 1:
                return path[path.index(neighbour) :] + [neighbour]
            if neighbour not in state and (cycle := visit(neighbour)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_library_imports_nothing_above_it():
    offending = {
        module_name(path): sorted(name for name in imported_modules(path) if name.split(".")[0] in ABOVE_THE_LIBRARY)
        for path in LIBRARY.rglob("*.py")
    }
    assert {module: names for module, names in offending.items() if names} == {}


def package_of(module: str) -> str:
    """model_lib.serving.recommender -> serving; a top-level module (model_lib.ranking) is its own package."""
    return module.split(".")[1] if module.count(".") else module


def layer_breaches(graph: dict[str, set[str]], layers) -> list[str]:
    """Every import of a package from a higher layer than its own, as 'a -> b'."""
    rank = {package: level for level, packages in enumerate(layers) for package in packages}
    return sorted(
        f"{module} -> {imported}"
        for module, imports in graph.items()
        for imported in imports
        if module != "model_lib" and rank[package_of(imported)] > rank[package_of(module)]
    )


def test_every_package_has_a_layer():
    from model_lib import LAYERS

    packages = {package_of(module) for module in library_graph() if module != "model_lib"}
    assert packages == {package for layer in LAYERS for package in layer}


def test_the_library_packages_import_downwards_only():
    from model_lib import LAYERS

    assert layer_breaches(library_graph(), LAYERS) == []


def test_each_loop_the_layering_removed_would_be_caught():
    """The package loops there were, put back one at a time, each breach the layers."""
    from model_lib import LAYERS

    loops = [
        ("model_lib.model.training", "model_lib.serving.recommender"),  # model <-> serving
        ("model_lib.evaluation.next_behaviour", "model_lib.serving.recommender"),  # serving <-> evaluation
        ("model_lib.evaluation.injected_anomalies", "model_lib.serving.anomalies"),
        ("model_lib.evaluation.report", "model_lib.model.training"),  # model <-> evaluation
        ("model_lib.config.groups", "model_lib.evaluation.metrics"),  # config -> evaluation
        ("model_lib.config.groups", "model_lib.evaluation.baselines"),
        ("model_lib.storage.lake", "model_lib.data.splits"),  # data <-> storage
        ("model_lib.storage.lake", "model_lib.serving.recommender"),  # storage -> serving (the registry)
        ("model_lib.storage.lake", "model_lib.model.training"),
    ]
    graph = library_graph()
    for module, imported in loops:
        changed = {**graph, module: graph[module] | {imported}}
        assert layer_breaches(changed, LAYERS) == [f"{module} -> {imported}"], (module, imported)


def test_the_library_modules_form_no_import_cycle():
    assert find_cycle(library_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def defined_names(path: Path) -> set[str]:
    """The names a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def test_every_import_of_the_library_names_something_it_has():
    """Everywhere (jobs, DAGs, benchmarks, tests, the library itself), inside functions too: a moved or renamed
    module shows up here, not in the one code path that imports it lazily."""
    modules = {module_name(path): path for path in LIBRARY.rglob("*.py")}
    broken = []
    for folder in ("model_lib", "jobs", "dags", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                    if isinstance(node, ast.Import):
                        broken += [
                            f"{path.relative_to(ROOT)}: import {alias.name}"
                            for alias in node.names
                            if alias.name.startswith("model_lib") and alias.name not in modules
                        ]
                    continue
                if not node.module.startswith("model_lib"):
                    continue
                if node.module not in modules:
                    broken.append(f"{path.relative_to(ROOT)}: from {node.module}")
                    continue
                have = defined_names(modules[node.module])
                broken += [
                    f"{path.relative_to(ROOT)}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name not in have and f"{node.module}.{alias.name}" not in modules
                ]
    assert broken == []
