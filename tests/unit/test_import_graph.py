"""The package graph of ``src/asterfleet`` has no cycles.

Read from the source with :mod:`ast`, nothing is imported. Every import
statement counts, wherever it stands: at module top, inside a function (a
lazy import that hides a cycle is still a cycle) and inside an
``if TYPE_CHECKING:`` block. A type needed only for an annotation counts
too: if module A needs a type from module B that sits above it, the type
belongs lower (STYLE.md), and an import that is type-only today is a runtime
import after the next refactor.

Three rules:

* no cycle between modules;
* no cycle between areas (``asterfleet.console``, ``asterfleet.fleet``, …:
  the first level below ``asterfleet``), except the ones in KNOWN_CYCLES;
* no product module imports :mod:`asterfleet.testing` (the harness that
  tests, benchmarks and scripts use), and only the console's app imports
  the console's routers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Set
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "asterfleet"

Graph = Mapping[str, frozenset[str]]

# Cycles between areas that are being taken apart on another branch. Each entry
# is one strongly connected set of areas; the test fails when an entry is no
# longer a cycle, so that it is deleted, and when any other cycle appears.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset({})

# Modules that may import asterfleet.testing: none of the product. The harness
# itself is the only importer inside src/.
HARNESS = "asterfleet.testing"


# -- reading the graph (pure) ---------------------------------------------------


def module_name(path: Path, src: Path) -> tuple[str, bool]:
    """``asterfleet/console/app.py`` -> ("asterfleet.console.app", False);
    a package's ``__init__.py`` names the package (True: it is a package)."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imported_names(tree: ast.AST, module: str, is_package: bool, modules: Set[str]) -> set[str]:
    """Every dotted name this module imports, relative imports made absolute.

    ``from a.b import c`` names the module ``a.b.c`` when there is one, else
    ``a.b`` (c is then a name defined in ``a/b/__init__.py``).
    """
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                names.add(full if full in modules else source)
    return names


def build_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, frozenset[str]]:
    """module -> the modules of the tree it imports, from {module: (source, is_package)}.

    Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``;
    those implicit edges are not counted, or every package whose ``__init__``
    re-exports its modules (one public surface, as httpx does) would be a cycle.
    An import of a module that does not exist is no edge: see
    :func:`missing_modules`.
    """
    modules = set(sources)
    graph: dict[str, frozenset[str]] = {}
    for module, (source, is_package) in sources.items():
        names = imported_names(ast.parse(source), module, is_package, modules)
        graph[module] = frozenset(n for n in names if n in modules and n != module)
    return graph


def missing_modules(sources: Mapping[str, tuple[str, bool]]) -> list[str]:
    """``module imports name`` for every import of an asterfleet module that is not there."""
    modules = set(sources)
    return sorted(
        f"{module} imports {name}"
        for module, (source, is_package) in sources.items()
        for name in imported_names(ast.parse(source), module, is_package, modules)
        if (name == ROOT or name.startswith(ROOT + ".")) and name not in modules
    )


def read_sources(src: Path = SRC) -> dict[str, tuple[str, bool]]:
    sources = {}
    # A compiled module (capture/_hepfast.pyx) is there as its typing stub.
    stubs = [p for p in (src / ROOT).rglob("*.pyi") if not p.with_suffix(".py").exists()]
    for path in sorted([*(src / ROOT).rglob("*.py"), *stubs]):
        name, is_package = module_name(path, src)
        sources[name] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def read_tree(src: Path = SRC) -> dict[str, frozenset[str]]:
    return build_graph(read_sources(src))


def area_of(module: str) -> str:
    """``asterfleet.console.app`` -> ``asterfleet.console``; top-level modules
    (``asterfleet.errors``) are areas of their own."""
    return ".".join(module.split(".")[:2])


def area_graph(graph: Graph) -> dict[str, frozenset[str]]:
    edges: dict[str, set[str]] = {area_of(m): set() for m in graph}
    for module, targets in graph.items():
        for target in targets:
            if area_of(target) != area_of(module):
                edges[area_of(module)].add(area_of(target))
    return {area: frozenset(targets) for area, targets in edges.items()}


def strongly_connected(graph: Graph) -> list[frozenset[str]]:
    """The sets of nodes that reach each other (Tarjan), only those of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        # Iterative, so that a deep graph cannot hit the recursion limit.
        work: list[tuple[str, list[str]]] = []
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work.append((start, sorted(graph.get(start, ()))))
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.add(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(frozenset(members))
    return found


def cycle_path(graph: Graph, members: frozenset[str]) -> list[str]:
    """One cycle through the smallest member of ``members``, as a path that ends
    where it starts: the shortest one, so the message names the import to cut."""
    start = min(members)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for target in sorted(graph.get(node, ())):
                if target not in members:
                    continue
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if target not in previous:
                    previous[target] = node
                    nxt_frontier.append(target)
        frontier = nxt_frontier
    raise AssertionError(f"no cycle through {start} in {sorted(members)}")


def describe(graph: Graph, cycles: Iterable[frozenset[str]]) -> str:
    lines = []
    for members in sorted(cycles, key=sorted):
        lines.append(f"{len(members)} in a cycle: " + " -> ".join(cycle_path(graph, members)))
    return "\n".join(lines)


# -- the rules, on the real tree --------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, frozenset[str]]:
    return read_tree()


def test_the_tree_is_read(graph: Graph) -> None:
    # A reader that found nothing would pass every rule below.
    assert len(graph) > 100
    assert "asterfleet.console.state" in graph["asterfleet.console.app"]
    assert "asterfleet.fleet.model" in graph["asterfleet.balancer.agent"]


def test_every_import_names_a_module_that_exists() -> None:
    # Otherwise the import fails at run time, after running the package's
    # __init__ (which may itself be part of a cycle this graph cannot see).
    missing = missing_modules(read_sources())
    assert not missing, "\n".join(missing)


def test_no_cycle_between_modules(graph: Graph) -> None:
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles between modules:\n" + describe(graph, cycles)


def test_no_cycle_between_areas_but_the_known_ones(graph: Graph) -> None:
    areas = area_graph(graph)
    cycles = set(strongly_connected(areas))
    new = cycles - KNOWN_CYCLES
    assert not new, "import cycles between areas:\n" + describe(areas, new)
    gone = KNOWN_CYCLES - cycles
    assert not gone, f"no longer a cycle, delete from KNOWN_CYCLES: {[sorted(c) for c in gone]}"


def test_no_product_module_imports_the_harness(graph: Graph) -> None:
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if area_of(module) != HARNESS
        for target in targets
        if area_of(target) == HARNESS
    )
    assert not offenders, "\n".join(offenders)


def test_only_the_app_includes_the_console_routers(graph: Graph) -> None:
    routers = {
        m
        for m in graph
        if m.startswith("asterfleet.console.")
        and "\nrouter = APIRouter(" in _source_of(m).replace("\r", "")
    }
    assert "asterfleet.console.fleet" in routers
    offenders = sorted(
        f"{module} imports the router module {target}"
        for module, targets in graph.items()
        if module != "asterfleet.console.app"
        for target in targets & routers
    )
    assert not offenders, "\n".join(offenders)


def _source_of(module: str) -> str:
    path = SRC / Path(*module.split("."))
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return file.read_text(encoding="utf-8")


# -- the reader and the cycle finder, on small trees ----------------------------

TREES: list[tuple[str, dict[str, tuple[str, bool]], dict[str, set[str]]]] = [
    (
        "absolute, relative and parent-relative imports",
        {
            "asterfleet": ("", True),
            "asterfleet.a": ("", True),
            "asterfleet.a.x": ("from . import y\nfrom .y import thing\n", False),
            "asterfleet.a.y": ("from ..b import z\n", False),
            "asterfleet.b": ("", True),
            "asterfleet.b.z": ("import asterfleet.a.x\n", False),
        },
        {
            "asterfleet.a.x": {"asterfleet.a.y"},
            "asterfleet.a.y": {"asterfleet.b.z"},
            "asterfleet.b.z": {"asterfleet.a.x"},
        },
    ),
    (
        "imports inside functions and TYPE_CHECKING blocks count",
        {
            "asterfleet": ("", True),
            "asterfleet.p": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from asterfleet.q import Q\n",
                False,
            ),
            "asterfleet.q": ("def f():\n    from asterfleet import p\n", False),
        },
        {"asterfleet.p": {"asterfleet.q"}, "asterfleet.q": {"asterfleet.p"}},
    ),
    (
        "a name from a package's __init__ is an edge to the package; outside names are not",
        {
            "asterfleet": ("", True),
            "asterfleet.auth": ("from asterfleet.auth.users import User\n", True),
            "asterfleet.auth.users": ("import os\nfrom sqlalchemy import Engine\n", False),
            "asterfleet.console": ("", True),
            "asterfleet.console.app": ("from asterfleet.auth import User\n", False),
        },
        {
            "asterfleet.auth": {"asterfleet.auth.users"},
            "asterfleet.auth.users": set(),
            "asterfleet.console.app": {"asterfleet.auth"},
        },
    ),
]


@pytest.mark.parametrize(("why", "sources", "expected"), TREES, ids=[t[0] for t in TREES])
def test_reader(
    why: str, sources: dict[str, tuple[str, bool]], expected: dict[str, set[str]]
) -> None:
    graph = build_graph(sources)
    for module, targets in expected.items():
        assert graph[module] == targets, f"{why}: {module}"


def test_a_cycle_is_reported_with_its_path() -> None:
    sources = TREES[0][1]
    graph = build_graph(sources)
    cycles = strongly_connected(graph)
    assert cycles == [frozenset({"asterfleet.a.x", "asterfleet.a.y", "asterfleet.b.z"})]
    assert describe(graph, cycles) == (
        "3 in a cycle: asterfleet.a.x -> asterfleet.a.y -> asterfleet.b.z -> asterfleet.a.x"
    )
    areas = area_graph(graph)
    assert strongly_connected(areas) == [frozenset({"asterfleet.a", "asterfleet.b"})]


@pytest.mark.parametrize(
    ("graph", "cycles"),
    [
        ({"a": frozenset({"b"}), "b": frozenset()}, []),
        ({"a": frozenset({"b"}), "b": frozenset({"a"})}, [{"a", "b"}]),
        (
            {
                "a": frozenset({"b"}),
                "b": frozenset({"c"}),
                "c": frozenset({"a", "d"}),
                "d": frozenset({"e"}),
                "e": frozenset({"d"}),
            },
            [{"a", "b", "c"}, {"d", "e"}],
        ),
    ],
)
def test_strongly_connected(graph: Graph, cycles: list[set[str]]) -> None:
    assert sorted(map(sorted, strongly_connected(graph))) == sorted(map(sorted, cycles))
