"""The code holds to its own rules, checked by tools (settings in pyproject.toml):
it type-checks (mypy: a wrong type in a rarely-run branch fails here, not in
production), it is formatted and linted by one tool (ruff), and its modules import
each other in one direction (no cycle, however it is dodged)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHECKED = ["taskq", "workers", "bench", "tests"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # mypy from cold takes a minute
def test_the_code_type_checks():
    done = _run("mypy", "taskq", "workers", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_code_is_formatted_and_linted_by_ruff():
    lint = _run("ruff", "check", *CHECKED)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run("ruff", "format", "--check", *CHECKED)
    assert fmt.returncode == 0, "run `ruff format` (the files below would change):\n" + fmt.stdout + fmt.stderr


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "taskq").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """taskq's modules and those of taskq each imports: at the top or inside a function
    alike (an import moved into a function still makes the cycle), `if TYPE_CHECKING:`
    imports left out (they never run)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parent + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t not in (name, "taskq")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_of_taskq_imports_itself_back():
    assert _cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("taskq.errors", "taskq.models"),
        ("taskq.models", "taskq.run"),
        ("taskq.record", "taskq.wire"),
        ("taskq.run", "taskq.gateway"),
        ("taskq.run", "taskq.engine"),
        ("taskq.wire", "taskq.cli"),
    ],
)
def test_a_layer_never_imports_the_layers_above_it(lower, upper):
    """Leaves (errors, models, record, ...) <- the domain (run, group, wire, ...) <-
    the edges (engine, gateway, client, cli): following the imports of `lower` never
    reaches `upper`."""
    graph = import_graph()
    seen, todo = set(), [lower]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert not any(m == upper or m.startswith(upper + ".") for m in seen), sorted(seen)
