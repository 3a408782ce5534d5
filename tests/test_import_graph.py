"""The import graph of the `zooserve` package and of `benchmarks/`, read statically: every
`import` and `from ... import` in a module's source (at module level, in functions, under
TYPE_CHECKING alike), relative imports resolved. Nothing is imported to find it.

No circles anywhere in it, and the layers keep to their direction: what the client shares
with the server (zooserve.protocol) and the client itself import no server and no training
code; the on-disk repository contract needs neither, nor NumPy; the server needs no
training code. The layer rules follow imports through other zooserve modules, so a circuit
through a third module is caught too."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

PACKAGES = ("zooserve", "benchmarks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


def imported_names(tree: ast.AST, name: str, is_package: bool) -> Iterable[tuple[str, str]]:
    """(imported module, attribute or '') for every import in `tree`, relative ones made
    absolute: `from a import b` gives ("a", "b"), since b may be a module or a name in a."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ""
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield base, "" if alias.name == "*" else alias.name


def resolve(target: str, attribute: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that an import names: `a.b` itself when `b` is a submodule, else
    the longest prefix of `a` that is one of ours; None for a module not ours."""
    if attribute and f"{target}.{attribute}" in modules:
        return f"{target}.{attribute}"
    parts = target.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def build_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between our modules, every imported module name per module, ours or not)."""
    modules = find_modules()
    graph: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        imports = list(imported_names(tree, name, path.name == "__init__.py"))
        external[name] = {target for target, _ in imports}
        graph[name] = {resolved for target, attribute in imports
                       if (resolved := resolve(target, attribute, modules)) not in (None, name)}
    return graph, external


GRAPH, IMPORTS = build_graph()


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each as
    the path around it, first module repeated at the end."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_through(component, graph) for component in components]


def cycle_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    start = component[0]
    paths = {child: [start, child] for child in sorted(graph[start]) if child in component}
    queue = list(paths)
    while queue:
        node = queue.pop(0)
        if node == start:
            return paths[node]
        for child in sorted(graph[node]):
            if child in component and child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    return paths[start] if start in paths else [*component, start]


def path_to(source: str, forbidden: tuple[str, ...], graph: dict[str, set[str]]) -> list[str]:
    """A chain of imports from `source` to a module under one of `forbidden`, or []."""
    paths = {source: [source]}
    queue = [source]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node]):
            if child in paths:
                continue
            paths[child] = [*paths[node], child]
            if under(child, forbidden):
                return paths[child]
            queue.append(child)
    return []


def under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def test_the_walk_sees_the_packages_and_their_imports():
    """The walk itself: it finds the modules, relative and function-level imports."""
    assert {"zooserve", "zooserve.cli", "zooserve.serving", "benchmarks.run"} <= set(GRAPH)
    assert len([name for name in GRAPH if name.startswith("zooserve.serving.")]) > 20
    assert any(GRAPH[name] for name in GRAPH if name.startswith("benchmarks."))
    tree = ast.parse("from . import a\nfrom ..b import c\ndef f():\n    import zooserve.cli\n")
    assert list(imported_names(tree, "zooserve.serving.x", is_package=False)) == [
        ("zooserve.serving", "a"), ("zooserve.b", "c"), ("zooserve.cli", "")]
    assert list(imported_names(ast.parse("from . import a"), "zooserve.serving",
                               is_package=True)) == [("zooserve.serving", "a")]


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    cycles = find_cycles(GRAPH)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# (modules, the packages they must not reach through zooserve's own imports)
LAYERS = [
    (("zooserve.protocol",), ("zooserve.serving", "zooserve.training")),
    (("zooserve.client",), ("zooserve.serving", "zooserve.training")),
    (("zooserve.repository",), ("zooserve.serving", "zooserve.training")),
    (("zooserve.serving",), ("zooserve.training",)),
]


@pytest.mark.parametrize(("sources", "forbidden"), LAYERS,
                         ids=[f"{s[0]}-not-{'-'.join(f)}" for s, f in LAYERS])
def test_layers_keep_their_direction(sources, forbidden):
    modules = [name for name in GRAPH if under(name, sources)]
    assert modules, sources
    chains = [chain for name in modules if (chain := path_to(name, forbidden, GRAPH))]
    assert not chains, "\n".join(" -> ".join(chain) for chain in chains)


def test_the_repository_contract_needs_no_numpy():
    """zooserve.repository is read by training, export, library builds and the server: it
    stays standard library, so a numpy import (even inside a function) is refused."""
    modules = [name for name in GRAPH if under(name, ("zooserve.repository",))]
    assert modules
    reached = {name for source in modules for name in [source, *reachable(source)]}
    numpy = {name: sorted(target for target in IMPORTS[name] if under(target, ("numpy",)))
             for name in sorted(reached)}
    assert not any(numpy.values()), {name: found for name, found in numpy.items() if found}


def reachable(source: str) -> set[str]:
    seen, queue = set(), [source]
    while queue:
        for child in GRAPH[queue.pop()]:
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return seen
