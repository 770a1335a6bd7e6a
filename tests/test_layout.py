"""The layout's rules, checked on the code's own imports: dependencies point inward, and no cycles.

Every import of every module of ``agent``, ``schemas`` and ``producers`` counts, at module level or
inside a function (a function-level import must not hide a cycle either); only imports under
``if TYPE_CHECKING:`` are left out, since they never run. Each package may import only what its
docstring says, which this test holds as :data:`ALLOWED`.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import ROOT

PACKAGES = ("agent", "schemas", "producers")

KERNEL = {
    "agent",
    "agent.errors",
    "agent.settings",
    "agent.metrics",
    "agent.retry",
    "agent.kafka",
    "agent.kafka_outage",
}
"""Cross-cutting modules every part of the agent may use: errors, the one settings class, metrics,
the retry schedule, Kafka client options and the Kafka clients' behaviour in a broker outage."""

# Unit -> the units it may import (besides itself, the kernel and schemas). A unit is a subpackage of
# agent, or one of agent's top-level modules.
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "producers": set(),
    "agent.models": set(),
    "agent.packaging": {"agent.models"},
    "agent.monitoring": {"agent.models"},
    "agent.serving": {"agent.monitoring", "agent.models"},
    "agent.alerting": {"agent.monitoring", "agent.serving.messages"},
    "agent.topics": set(),
    "agent.report": {"agent.alerting", "agent.models"},
    "agent.app": {
        "agent.alerting",
        "agent.monitoring",
        "agent.models",
        "agent.report",
        "agent.serving",
        "agent.topics",
    },
    "agent.demo": {
        "agent.alerting",
        "agent.models",
        "agent.monitoring",
        "agent.packaging",
        "agent.report",
        "agent.serving",
        "agent.topics",
        "producers",
    },
    "agent.cli": {"*"},
}
WORKER = ("agent.app", "agent.cli.run")
"""The worker's entry points: nothing they import may reach the build, demo or command modules."""


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def _type_checking(node: ast.If) -> bool:
    return ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _imports(tree: ast.AST, module: str) -> Iterator[str]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            yield from (name for child in node.orelse for name in _imports(child, module))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            for alias in node.names:
                # `from agent.monitoring import batch` imports the module agent.monitoring.batch.
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        yield from _imports(node, module)


def edges() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = set()
        for name in _imports(ast.parse(path.read_text(), filename=str(path)), module):
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


GRAPH = edges()


def unit(module: str) -> str:
    if module in KERNEL:
        return "kernel"
    parts = module.split(".")
    if parts[0] != "agent":
        return parts[0]
    return ".".join(parts[:2])


def allowed(source: str, target: str) -> bool:
    src, dst = unit(source), unit(target)
    if dst in (src, "kernel", "schemas"):
        return src != "schemas" or dst == "schemas"
    if src == "kernel":
        return False
    permitted = ALLOWED[src]
    return (
        "*" in permitted
        or dst in permitted
        or any(target.startswith(p + ".") or target == p for p in permitted)
    )


def test_the_scan_sees_the_layout() -> None:
    units = {unit(m) for m in MODULES}
    assert units == {"kernel", *ALLOWED}, units ^ {"kernel", *ALLOWED}
    assert {"agent.monitoring.observer", "agent.serving.loop", "agent.alerting.sinks.webhook"} <= set(MODULES)
    assert "agent.monitoring.batch" in GRAPH["agent.serving.handler"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_dependencies_point_inward(module: str) -> None:
    wrong = sorted(t for t in GRAPH[module] if not allowed(module, t))
    assert not wrong, f"{module} ({unit(module)}) may not import {wrong}"


def test_no_import_cycle() -> None:
    # Tarjan's strongly connected components over the whole graph.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
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
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_worker_does_not_reach_the_build_demo_or_commands() -> None:
    seen: set[str] = set()
    todo = list(WORKER)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(GRAPH[module])
    reached = sorted(m for m in seen if unit(m) in ("agent.packaging", "agent.demo", "producers"))
    reached += sorted(m for m in seen if unit(m) == "agent.cli" and m not in ("agent.cli", "agent.cli.run"))
    assert not reached, f"the worker imports {reached}"


# agent.cli.__main__ runs the command when imported (`python -m agent.cli`); its one import is checked
# with the rest of the graph.
@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_every_package_says_what_it_owns(package: str) -> None:
    tree = ast.parse(MODULES[package].read_text())
    doc = ast.get_docstring(tree) or ""
    assert doc, f"{package} has no docstring"
    exported = [
        n for n in tree.body if isinstance(n, ast.Assign | ast.AnnAssign) and "__all__" in ast.unparse(n)
    ]
    assert exported, f"{package} has no explicit __all__"
    if package.startswith("agent.") and package.count(".") == 1:
        assert "May import" in doc, f"{package}'s docstring does not say what it may import"
