"""The house's rules that code review would otherwise have to keep: no import circles in
the packages, and no test module importing another."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imports_of(path: Path, package_modules: set[str]) -> set[str]:
    """The project modules a file imports (at any depth of the file: lazy imports count;
    those under `if TYPE_CHECKING:` do not, as they never run: a type named back up the
    layers is no circle)."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # the type checkers' imports out of the tree first
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found |= {name for name in names if name in package_modules}
    return found


def module_graph(packages: list[str]) -> dict[str, set[str]]:
    files = {}
    for package in packages:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target] if target in path else [node, target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_the_graph_finds_a_circle():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


def test_only_the_type_checkers_imports_are_left_out(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nimport p.a\nif TYPE_CHECKING:\n    import p.b\n"
        "def f():\n    import p.c\n"
    )
    assert imports_of(module, {"p.a", "p.b", "p.c"}) == {"p.a", "p.c"}


def test_no_import_circle_in_the_packages():
    graph = module_graph(["east_agent", "training"])
    # a package's __init__ re-exporting its modules is its face, not a circle
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    assert cycle_in(graph) is None


def test_no_test_module_imports_another():
    tests = {path.stem for path in (REPO / "tests").rglob("test_*.py")}
    for path in (REPO / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in tests:
                raise AssertionError(f"{path.relative_to(REPO)} imports {node.module}")
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name not in tests, f"{path} imports {alias.name}"
