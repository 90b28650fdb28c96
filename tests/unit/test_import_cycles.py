"""Import cycles among cocin's modules (issue 12), lazy imports included.

A cycle hides the order in which a container is made: which module is the
caller and which the callee. Every ``import`` and ``from ... import`` in
every cocin module counts, at the top or inside a function; a submodule
importing its own package (``cocin.network.bridge`` -> ``cocin.network``) does
not, as the package is always loaded first.

The plumbing every command stands on (errors, paths, files, process,
records, JSON, libc, cgroups, network) is in no cycle at all: it never
imports the verbs above it. The cycles elsewhere are still to be untangled;
``python3 -c "import test_import_cycles as t; print(t.cycles())"`` from this
directory lists them.
"""

from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _modules() -> dict[str, str]:
    mods = {}
    for d, _dirs, names in os.walk(os.path.join(REPO, "cocin")):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(d, name)
                mod = os.path.relpath(path, REPO)[:-3].replace("/", ".")
                mods[mod.removesuffix(".__init__")] = path
    return mods


def _imports(mod: str, path: str, known: dict[str, str]) -> set[str]:
    package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
    with open(path) as f:
        tree = ast.parse(f.read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n in known and n != mod and not mod.startswith(n + "."))
    return out


def cycles() -> set[tuple[str, ...]]:
    """The strongly connected groups of two or more modules (Tarjan's algorithm)."""
    mods = _modules()
    edges = {m: _imports(m, p, mods) for m, p in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.add(tuple(sorted(group)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


PLUMBING = (
    "cocin.errors",
    "cocin.paths",
    "cocin.files",
    "cocin.process",
    "cocin.record",
    "cocin.fastjson",
    "cocin.state",
    "cocin.libc",
    "cocin.cgroups",
    "cocin.network",
)


def test_the_plumbing_is_in_no_cycle():
    for group in cycles():
        inside = [m for m in group if m.startswith(PLUMBING)]
        assert not inside, f"{inside} in an import cycle: {group}"
