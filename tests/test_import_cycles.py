"""No import circles among reconciler's modules, counting imports inside functions too (grimp, the graph
import-linter builds). KNOWN lists the circles allowed to remain (none): the list only shrinks (a new circle
fails, and so does a listed one that is gone, so it leaves the list)."""

from __future__ import annotations

import sys

import grimp

KNOWN: set[frozenset[str]] = set()  # issue 20 broke the last six; a circle that comes back fails here


def circles(graph: grimp.ImportGraph, package: str = "reconciler") -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.find_modules_directly_imported_by(module):
            if not target.startswith(package):
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == module:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for module in sorted(graph.modules):
        if module.startswith(package) and module not in index:
            visit(module)
    return found


def test_no_new_import_circle_and_the_known_ones_only_shrink():
    found = circles(grimp.build_graph("reconciler"))
    new = found - KNOWN
    assert not new, "import circles (move the shared piece below both modules): " + "; ".join(
        " <-> ".join(sorted(c)) for c in new)
    gone = KNOWN - found
    assert not gone, "these circles are gone: remove them from KNOWN: " + "; ".join(" <-> ".join(sorted(c)) for c in gone)


def test_the_check_finds_a_planted_circle(tmp_path, monkeypatch):
    package = tmp_path / "planted"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from planted import b\n    return b\n")
    (package / "b.py").write_text("from planted import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("planted", cache_dir=None)
    assert circles(graph, "planted") == {frozenset({"planted.a", "planted.b"})}  # an import inside a function counts
