"""The layout's rules, checked on the source: layers, no import circles, small files.

See docs/architecture.md. ``fl_core`` is the floor; ``tasks`` and ``strategies`` stand on
it and never reach up into the harness; inside ``fl_sim`` the readers of run folders
(``record``, ``report``) never import the apps or the launchers, and the apps never
import the launchers (``run.simulation``, ``run.deploy``, ``run.sweep``, ``run.parallel``)
or the CLI.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("fl_core", "fl_sim", "tasks", "strategies")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Project modules ``path`` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in MODULES}
    return found


def _importers_of(prefixes: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for name, path in MODULES.items():
        if name.startswith(prefixes):
            bad += [f"{name} -> {m}" for m in _imports(path, top_level_only=False)
                    if m.startswith(forbidden)]
    return bad


def test_the_floor_imports_nothing_above_it():
    assert _importers_of(("fl_core",), ("fl_sim", "tasks", "strategies")) == []


def test_tasks_and_strategies_never_import_the_harness():
    assert _importers_of(("tasks", "strategies"), ("fl_sim",)) == []
    assert _importers_of(("strategies",), ("tasks",)) == []


def test_readers_of_run_folders_never_import_apps_or_launchers():
    launchers = ("fl_sim.run.simulation", "fl_sim.run.deploy", "fl_sim.run.sweep",
                 "fl_sim.run.parallel", "fl_sim.cli")
    assert _importers_of(("fl_sim.record", "fl_sim.report"),
                         ("fl_sim.app", *launchers)) == []
    assert _importers_of(("fl_sim.app",), launchers) == []


def test_no_import_circles_at_module_level():
    graph = {name: _imports(path, top_level_only=True) - {name} for name, path in MODULES.items()}
    done, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        stack.append(node)
        for nxt in graph[node]:
            visit(nxt)
        stack.pop()
        done.add(node)

    for name in graph:
        visit(name)
    assert cycles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_source_file_is_over_400_lines(name):
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES


HISTORY = re.compile(r"(first|second|third|fourth|fifth|sixth|seventh|eighth) session"
                     r"|session [0-9]|issue #?[0-9]+", re.I)


def test_the_product_speaks_of_itself():
    """No code, test, benchmark or doc refers to how it came to be (sessions, issues)."""
    files = [p for pattern in ("*.py", "*.md", "*.toml", "*.sh")
             for p in REPO.rglob(pattern)
             if ".venv" not in p.parts and "results" not in p.parts and ".git" not in p.parts]
    found = [f"{p.relative_to(REPO)}:{i}" for p in files
             for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             if HISTORY.search(line)]
    assert found == []
