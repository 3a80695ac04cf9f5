"""cllm's import graph has no cycles, and its layers import downwards only (docs/design.md, "Layers, top down").

The graph is read from the source with `ast`, not by importing anything. Its nodes are cllm's modules, one per
.py file (a package's `__init__.py` is the package's module, `cllm.data` for cllm/data/__init__.py); an edge
A -> B means A's source imports B:

- every `import` and `from ... import` anywhere in A counts, at the top or inside a function: a function-level
  import runs when the function is called, so a cycle through one is still two modules that need each other
  (it only moves the failure from start-up to some later call, where tests may not look);
- imports under `if TYPE_CHECKING:` do not count: they never run, so they cannot make import order matter, and
  naming a type for an annotation is documentation, not a dependency of the code that runs;
- relative imports are resolved against A's package; `from P import name` is an edge to the module P.name when
  that is a module (a submodule imported by name), else to P;
- importing P.Q runs P's `__init__` first, so a module outside P that imports P.Q also has an edge to P (and to
  each package between): were cllm/interop/llmc.py to import cllm.data.tokenfile, that would run
  cllm/data/__init__.py, which imports cllm/data/prepare.py; if prepare imported llmc back, the name it asks
  for would not be there yet (a real ImportError, at start-up, through no import statement of a cycle).
  A module inside P has no such edge: P is already being imported when its own submodule runs (otherwise a
  package's `__init__` that re-exports its submodules would close a cycle with every one importing a sibling);
- `importlib.import_module(name)` is not an import statement and is not seen. cllm/cli.py loads commands that
  way, and cllm/kinds.py the dataset kinds (the registry through which vision plugs into the data,
  training and serve layers without those layers importing it).
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cllm")


def module_files(root: str | None = None) -> dict[str, str]:
    """Dotted module name -> path, for every .py file under cllm/ (or `root`, a directory named cllm)."""
    root = root or ROOT
    out = {}
    base = os.path.dirname(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in filenames:
            if not name.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(dirpath, name), base)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = os.path.join(dirpath, name)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the statements inside `if TYPE_CHECKING:` (or `if typing.TYPE_CHECKING:`) blocks."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(name: str, path: str, modules: dict[str, str]) -> list[tuple[str, int]]:
    """[(imported cllm module, line)] of the module `name` (see the module doc for what counts)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    skip = _type_checking_nodes(tree)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append((sub if sub in modules else source, node.lineno))
    edges = []
    for target, line in found:
        if target not in modules or target == name:
            continue
        edges.append((target, line))
        parts = target.split(".")
        for k in range(1, len(parts)):  # the packages it runs first, unless `name` is inside them
            outer = ".".join(parts[:k])
            if outer in modules and outer != name and not name.startswith(outer + "."):
                edges.append((outer, line))
    return edges


def import_graph(root: str | None = None) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of its first import (the lowest line number)}."""
    modules = module_files(root)
    graph = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(name, path, modules):
            edges[target] = min(line, edges.get(target, line))
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The cycles to show, each as [m0, m1, ..., m0]: in every strongly connected component of more than one
    module (Tarjan's algorithm, iterative), a shortest cycle through each of its modules (breadth-first
    search), each cycle once. Not every cycle (there may be exponentially many), but every module on one."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    cycles = set()
    for component in components:
        for member in component:
            cycle = _shortest_cycle(graph, member, set(component))
            k = cycle.index(min(cycle[:-1]))  # the same cycle found from another member: one rotation
            cycles.add(tuple(cycle[k:-1] + cycle[:k] + [cycle[k]]))
    return [list(c) for c in sorted(cycles)]


def _shortest_cycle(graph: dict[str, dict[str, int]], first: str, members: set[str]) -> list[str]:
    """[first, ..., first]: a shortest cycle through `first` inside its strongly connected component."""
    parent, frontier = {first: None}, [first]
    while frontier:
        nxt = []
        for m in frontier:
            for child in sorted(graph[m]):
                if child == first:
                    path = [m]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return list(reversed(path)) + [first]
                if child in members and child not in parent:
                    parent[child] = m
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{first} is in a cycle, yet none comes back to it")


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """'a (line 3) -> b (line 10) -> a': each module with the line of its import of the next."""
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_no_import_cycles():
    graph = import_graph()
    assert "cllm.data" in graph and "cllm.kernels.matmul" in graph  # the walk found the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in cllm (a shortest one through each module on a cycle):\n" + \
        "\n".join(describe(c, graph) for c in cycles)


def commands_imported_by_the_library(root: str | None = None) -> list[str]:
    """Imports of cllm.commands from outside it and cllm/cli.py (the dispatcher), which docs/design.md forbids."""
    graph = import_graph(root)
    return [f"{m} (line {line}) imports {t}" for m, edges in sorted(graph.items()) for t, line in sorted(edges.items())
            if (t == "cllm.commands" or t.startswith("cllm.commands."))
            and not (m == "cllm.cli" or m == "cllm.commands" or m.startswith("cllm.commands."))]


def kernels_imports_from_above(root: str | None = None) -> list[str]:
    """Imports by cllm.kernels of cllm modules other than its own and `cllm.__version__` (its cache's key)."""
    modules, graph = module_files(root), import_graph(root)
    bad = []
    for m, edges in sorted(graph.items()):
        if m != "cllm.kernels" and not m.startswith("cllm.kernels."):
            continue
        for t, line in sorted(edges.items()):
            if t == "cllm.kernels" or t.startswith("cllm.kernels."):
                continue
            if t == "cllm":
                names = {n for n in _names_imported_from(modules[m], "cllm")
                         if n != "__version__" and f"cllm.{n}" not in modules}  # submodules are edges of their own
                if not names:
                    continue
                t = f"cllm ({', '.join(sorted(names))})"
            bad.append(f"{m} (line {line}) imports {t}")
    return bad


def _names_imported_from(path: str, source: str) -> set[str]:
    """The names the file imports from `source` (`from cllm import __version__`: {"__version__"}; a plain
    `import cllm`: {"*"}, any name)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == source:
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.Import) and any(a.name == source for a in node.names):
            names.add("*")
    return names


def test_only_the_dispatcher_imports_commands():
    assert not (bad := commands_imported_by_the_library()), "\n".join(bad)


def test_kernels_import_nothing_of_cllm_above_them():
    assert not (bad := kernels_imports_from_above()), "\n".join(bad)


# ----------------------------------------------------------------------------- the checker itself
def _write(tmp_path, files: dict[str, str]) -> str:
    root = tmp_path / "cllm"
    for rel, text in {"__init__.py": "", **files}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(root)


def test_finds_a_cycle_through_a_function_level_and_a_relative_import(tmp_path):
    root = _write(tmp_path, {
        "a/__init__.py": "",
        "a/x.py": "def f():\n    from cllm.b import y\n",
        "b/__init__.py": "from . import y\n",
        "b/y.py": "from ..a import x\n",
    })
    graph = import_graph(root)
    assert graph["cllm.b"] == {"cllm.b.y": 1}
    assert graph["cllm.a.x"] == {"cllm.b.y": 2, "cllm.b": 2}  # importing cllm.b.y runs the package cllm.b first
    cycles = find_cycles(graph)
    assert cycles == [["cllm.a.x", "cllm.b", "cllm.b.y", "cllm.a.x"], ["cllm.a.x", "cllm.b.y", "cllm.a.x"]]
    assert describe(cycles[1], graph) == "cllm.a.x (line 2) -> cllm.b.y (line 1) -> cllm.a.x"


def test_type_checking_imports_and_parent_packages_are_not_edges(tmp_path):
    root = _write(tmp_path, {
        "p/__init__.py": "from cllm.p.q import Q\n",
        "p/q.py": "from typing import TYPE_CHECKING\nfrom cllm.p.r import R\nif TYPE_CHECKING:\n"
                  "    from cllm.s import S\n",
        "p/r.py": "R = 1\n",
        "s.py": "import cllm.p.q\n",
    })
    graph = import_graph(root)
    assert graph["cllm.p.q"] == {"cllm.p.r": 2}
    assert find_cycles(graph) == []


def test_a_package_init_run_by_an_import_from_outside_closes_a_cycle(tmp_path):
    """The shape of cllm/interop/llmc.py importing cllm.data.tokenfile while cllm/data/prepare.py imported llmc."""
    root = _write(tmp_path, {
        "p/__init__.py": "from cllm.p.a import A\n",
        "p/a.py": "from cllm.q import B\nA = 1\n",
        "p/c.py": "C = 1\n",
        "q.py": "from cllm.p.c import C\nB = 2\n",
    })
    graph = import_graph(root)
    assert graph["cllm.q"] == {"cllm.p.c": 1, "cllm.p": 1}
    assert find_cycles(graph) == [["cllm.p", "cllm.p.a", "cllm.q", "cllm.p"]]


@pytest.mark.parametrize("source", ["from cllm.commands import x\n", "import cllm.commands.x\n"])
def test_layering_checks_can_fail(tmp_path, source):
    root = _write(tmp_path, {"commands/__init__.py": "", "commands/x.py": "", "cli.py": source, "lib.py": source,
                             "kernels/__init__.py": "from cllm import __version__\n",
                             "kernels/k.py": "from cllm import __version__, errors\nfrom cllm.kernels import x\n"
                                             "from cllm import lib\n"})
    assert commands_imported_by_the_library(root) == ["cllm.lib (line 1) imports cllm.commands",
                                                      "cllm.lib (line 1) imports cllm.commands.x"]
    assert kernels_imports_from_above(root) == ["cllm.kernels.k (line 1) imports cllm (errors)",
                                                "cllm.kernels.k (line 3) imports cllm.lib"]
