"""The layout the architecture names: no import cycle among the project's packages, and the
fakes (test and demo doubles) reached by no product module but the demo composition.

Every import counts, the lazy ones inside functions too: a lazy import hides a cycle from the
interpreter at start-up, not from the design.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "ohlcv",
    "schemas",
    "streams",
    "topologies",
    "sinks",
    "api",
    "fakes",
    "indicators",
    "calibration",
    "training",
    "registry",
    "monitoring",
    "reports",
    "retrain",
    "news",
    "risk",
)
#: product modules allowed to import the fakes: the demo composition
FAKES_USERS = {"ohlcv.demo"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its body (``from a import b`` counts
    ``a.b`` when that is a module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]  # fmt: skip
        else:
            continue
        for target in targets:
            # ``import a.b.c`` of a module: the nearest project module it names
            nearest = target
            while nearest and nearest not in modules:
                nearest = nearest.rpartition(".")[0]
            if nearest and nearest != name:
                found.add(nearest)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "ohlcv.services" in graph["ohlcv.runtime"]
    # a lazy import inside a function
    assert "topologies.runner" in graph["ohlcv.services"]
    # ``from streams.importers.common import ...`` inside the package
    assert "streams.importers.common" in graph["streams.importers.vision"]


def test_the_project_packages_have_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_product_module_imports_the_fakes_but_the_demo() -> None:
    graph = import_graph()
    users = {m for m, deps in graph.items() if m.split(".")[0] != "fakes"
             and any(d.split(".")[0] == "fakes" for d in deps)}  # fmt: skip
    assert users == FAKES_USERS
    # and the demo sits on top: nothing else in the project imports it
    assert {m for m, deps in graph.items() if "ohlcv.demo" in deps} == {"ohlcv.cli"}


def test_the_feature_batch_reference_stands_apart_from_the_streaming_code() -> None:
    """The exactness tests compare the stream with ``indicators.batch``: it shares the feature
    definitions, never the streaming update code."""
    graph = import_graph()
    assert "indicators.definitions" in graph["indicators.batch"]
    assert {d for d in graph["indicators.batch"] if d.split(".")[0] == "topologies"} == set()


def test_the_api_starts_without_the_stream_processing_and_model_libraries() -> None:
    """The API process imports neither Quix Streams (the topologies' engine) nor the heavy
    training/report libraries: checked in a fresh interpreter, as ``ohlcv run api`` starts."""
    code = (
        "import sys, api.main, api.routes.features; "
        "heavy = ('quixstreams', 'catboost', 'evidently', 'pandas'); "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == ""
