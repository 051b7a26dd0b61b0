"""The module layers of docs/api.md section 4: no import circle, no import in a function body.

Every module under ``geomrobust/`` is parsed (not imported). The graph has an edge from a
module to each ``geomrobust`` module it imports at module level (relative imports resolved;
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``;
an ``if TYPE_CHECKING:`` block does not run and is skipped). A strongly connected set of
more than one module, or a module importing itself, is a circle.

An import inside a function body is allowed only for an optional or deliberately lazy
dependency (``OPTIONAL``), or in the files of ``LAZY`` whose owners are still moving their
imports to module level (issue 23; the list only shrinks: a file on it without a function-body
import fails ``test_lazy_allowlist_shrinks``).
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "geomrobust"

OPTIONAL = {
    "torch": "optional (models.from_torch of a .pt file, the torch import)",
    "torchax": "optional",
    "foolbox": "optional (benchmarks)",
    "tensorflow": "optional (the tf extra)",
    "tensorflow_datasets": "seconds to import; only the standard datasets need it",
    "matplotlib": "plot / report / CLI figures only (matplotlib is imported on first use)",
    "fcntl": "POSIX only: imported where a file lock is taken",
    "sklearn": "seconds to import; only building the embedded digits needs it",
    "orbax": "a second to import; only checkpoint files need it",
}
"""Top-level packages that may be imported in a function body, and why."""

LAZY: dict[str, str] = {}
"""Files (relative to geomrobust/) whose function-body imports other helpers of issue 23 are
still removing, with their owner. Shrinks only."""


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module):
    """Import nodes that run when the module is imported (not in functions or classes)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _type_checking(node):
                todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
            for h in node.handlers:
                todo += h.body
        elif isinstance(node, ast.With):
            todo += node.body


def _edges(module: str, tree: ast.Module) -> set[str]:
    out = set()
    for node in _module_level_imports(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = _resolve(module, node)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        for t in targets:
            while t and t not in MODULES and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in MODULES:
                out.add(t)
    return out


def _function_body_imports(tree: ast.Module):
    """(function name, line, imported top-level package) of each import in a function."""
    found = []

    def visit(node, fn):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, getattr(child, "name", "<lambda>"))
                continue
            if fn is not None and isinstance(child, ast.Import | ast.ImportFrom):
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                else:
                    names = ["." * child.level + (child.module or "")]
                found.extend((fn, child.lineno, n) for n in names)
            visit(child, fn)

    visit(tree, None)
    return found


TREES = {m: ast.parse(p.read_text(), filename=str(p)) for m, p in MODULES.items()}
GRAPH = {m: _edges(m, t) for m, t in TREES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with a circle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in graph[v]:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import circles between modules (docs/api.md section 4): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def _lazy_file(module: str) -> str:
    return str(MODULES[module].relative_to(ROOT))


def test_no_function_body_imports():
    bad = []
    for module, tree in TREES.items():
        if _lazy_file(module) in LAZY:
            continue
        for fn, line, name in _function_body_imports(tree):
            top = name.lstrip(".").split(".")[0] if not name.startswith(".") else ""
            if top in OPTIONAL:
                if top == "matplotlib" and not module.startswith(
                    ("geomrobust.plot", "geomrobust.report", "geomrobust.cli")
                ):
                    bad.append(f"{_lazy_file(module)}:{line} {fn}() imports {name}")
                continue
            bad.append(f"{_lazy_file(module)}:{line} {fn}() imports {name}")
    assert not bad, (
        "imports inside function bodies (move them to the top of the module; docs/api.md "
        "section 4):\n" + "\n".join(bad)
    )


def test_lazy_allowlist_shrinks():
    stale = []
    for path in LAZY:
        module = _module_name(ROOT / path)
        if module not in TREES:
            stale.append(f"{path} (gone)")
            continue
        names = [
            n
            for _, _, n in _function_body_imports(TREES[module])
            if n.lstrip(".").split(".")[0] not in OPTIONAL or n.startswith(".")
        ]
        if not names:
            stale.append(path)
    assert not stale, f"these files have no function-body import left: remove from LAZY: {stale}"


def test_the_checks_catch_violations():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(map(tuple, _cycles(graph))) == [("a", "b", "c"), ("e",)]
    tree = ast.parse(
        "import os\ndef f():\n    import numpy\n    def g():\n        from . import x\n"
    )
    assert _function_body_imports(tree) == [("f", 3, "numpy"), ("g", 5, ".")]


def test_graph_resolves_relative_imports():
    """A few known edges, so a resolution bug cannot hide circles."""
    assert "geomrobust.search" in GRAPH["geomrobust._api"]
    assert "geomrobust.measures._curvature" in GRAPH["geomrobust.measures"]
