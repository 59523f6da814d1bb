"""The import graph keeps the architecture honest (DESIGN.md, "A layout that shows the
architecture"): no import cycles among neurofm's modules; ``neurofm/models/`` and
``neurofm/tokens.py`` import nothing from ``neurofm/io/``.

The graph is read from the source with :mod:`ast`, so nothing is imported to build it:

- **every** import counts, at module level or inside a function. A function-level import
  is a cycle Python tolerates only because it runs late: ``tokens.py`` importing
  ``io.eeg`` inside functions while ``io`` imports ``tokens`` is still two modules that
  cannot be understood, tested or moved apart. Imports under ``if TYPE_CHECKING:`` do not
  run and do not count.
- relative imports are resolved against the importing module's package; ``from pkg import
  name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
- importing ``a.b.c`` runs the ``__init__`` of ``a.b`` first: that implicit edge counts
  too, except to packages that contain the importing module (already running).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "neurofm"


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Import statements anywhere (functions too), except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _owner(name: str, modules) -> str | None:
    """The module that ``name`` (a module, or an attribute of one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, source: str, modules, is_package: bool) -> list[tuple[str, int]]:
    """(imported neurofm module, line) for each import in ``source``, implicit
    parent-package imports included."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]  # fmt: skip
        for target in targets:
            target = _owner(target, modules)
            if target is None or target == name:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # a.b.c runs a.b's __init__ first
                step = ".".join(parts[:i])
                if step in modules and not (name + ".").startswith(step + "."):
                    found.append((step, node.lineno))
    return found


def import_graph(modules=None) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line importing it}."""
    modules = modules or module_names()
    graph = {}
    for name, path in modules.items():
        edges = {}
        for target, line in imports_of(name, path.read_text(), modules, path.name == "__init__.py"):
            edges.setdefault(target, line)
        graph[name] = edges
    return graph


def cycles(graph) -> list[list[str]]:
    """One shortest cycle through each strongly connected group of modules (Tarjan)."""
    index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # iterative enough for a package of this size
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for group in groups:
        start = min(group)
        prev, queue = {start: None}, deque([start])
        while queue:  # shortest path back to start inside the group
            v = queue.popleft()
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    out.append([*reversed(path), start])
                    queue.clear()
                    break
                if w in group and w not in prev:
                    prev[w] = v
                    queue.append(w)
    return out


def _describe(cycle, graph, modules) -> str:
    return (
        "  "
        + " -> ".join(cycle)
        + "\n"
        + "\n".join(
            f"      {modules[a].relative_to(ROOT.parent)}:{graph[a][b]} imports {b}"
            for a, b in zip(cycle, cycle[1:], strict=False)
        )
    )


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_parser_sees_every_kind_of_import():
    modules = {n: None for n in ("pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "pkg.d")}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "from . import b\n"  # a sibling module
        "from .sub import c_name\n"  # a name of a package: the package
        "if TYPE_CHECKING:\n"
        "    from .d import Only\n"  # never runs
        "def f():\n"
        "    from pkg.sub.c import thing\n"  # function level, absolute, via pkg.sub
    )
    found = imports_of("pkg.a", source, modules, is_package=False)
    assert sorted(found) == [("pkg.b", 3), ("pkg.sub", 4), ("pkg.sub", 8), ("pkg.sub.c", 8)]
    assert imports_of("pkg.sub.c", "from .. import a\n", modules, False) == [("pkg.a", 1)]
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
        ["a", "b", "c", "a"]
    ]


def test_no_import_cycles(graph):
    found = cycles(graph)
    modules = module_names()
    assert not found, "import cycles among neurofm modules:\n" + "\n".join(
        _describe(c, graph, modules) for c in found
    )


@pytest.mark.parametrize("prefix", ["neurofm.models", "neurofm.tokens"])
def test_model_side_imports_nothing_from_io(graph, prefix):
    modules = module_names()
    bad = [f"{modules[m].relative_to(ROOT.parent)}:{line} imports {target}"
           for m, edges in graph.items() if m == prefix or m.startswith(prefix + ".")
           for target, line in edges.items()
           if target == "neurofm.io" or target.startswith("neurofm.io.")]  # fmt: skip
    assert graph.get(prefix) is not None and not bad, "\n".join(bad)
