"""Imports point one way: the command-line tools (cifar_lightning/cli/) use the training path, never
the reverse, and no module of the package imports itself back through another."""
from __future__ import annotations

import ast
import json
from pathlib import Path

from conftest import CONF, ROOT, run_python

PACKAGE = ROOT / "cifar_lightning"
CLI = "cifar_lightning.cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it (a function-level import counts:
    it runs too); ``from a import b`` names ``a.b`` when that is a module, else ``a``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
    return found & modules


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p): p for p in sorted(root.rglob("*.py"))}
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    return next((c for node in sorted(graph) if node not in state and (c := visit(node))), None)


def test_find_cycle_finds_a_planted_cycle_and_passes_a_chain() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert {"cifar_lightning.training", "cifar_lightning.plots", f"{CLI}.report"} <= set(graph)
    assert "cifar_lightning.plots" in graph["cifar_lightning.callbacks.artefacts"]  # the graph sees imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_only_command_line_tools_import_command_line_tools() -> None:
    """Statically, the package and conf/'s ``_target_``s; the subprocess test below checks what really loads."""
    leaks = {name: sorted(d for d in deps if d.startswith(CLI))
             for name, deps in import_graph().items() if not name.startswith(CLI)}
    assert {name: deps for name, deps in leaks.items() if deps} == {}
    targets = [p for p in CONF.rglob("*.yaml") if f"_target_: {CLI}" in p.read_text()]
    assert targets == []


def test_a_training_run_loads_no_command_line_tool() -> None:
    """``import cifar_lightning.training`` (what train.py runs) in a fresh interpreter loads none of cli/."""
    code = ("import json, sys, cifar_lightning.training; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cifar_lightning'))))")
    result = run_python(["-c", code])
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "cifar_lightning.callbacks.artefacts" in loaded  # the list is the real one
    assert [m for m in loaded if m == CLI or m.startswith(f"{CLI}.")] == []
