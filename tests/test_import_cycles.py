"""No import loops among the hub's own modules, counting imports inside functions too: a lazy
import that closes a loop only hides it (the loop is still there, just later)."""
from __future__ import annotations

import ast
from pathlib import Path

import hub

ROOT = Path(hub.__file__).parent


def module_name(path: Path) -> str:
    parts = ["hub", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from X import Y``: the module X.Y where Y is one, else X itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every loop found by a depth-first walk (each reported once, from its smallest module)."""
    found, seen = [], set()

    def walk(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in trail:
                loop = trail[trail.index(nxt):]
                start = loop.index(min(loop))
                key = tuple(loop[start:] + loop[:start])
                if key not in seen:
                    seen.add(key)
                    found.append(list(key) + [key[0]])
            elif len(trail) < 12:
                walk(nxt, trail + [nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_the_graph_sees_relative_lazy_and_package_imports():
    graph = import_graph()
    assert "hub.store" in graph["hub.dispatch"]  # from .store import ...
    assert "hub.logs" in graph["hub.dispatch"]  # from . import logs
    assert "hub.hookspecs" in graph["hub.default_plugins.jsonl"]  # from ..hookspecs import hookimpl
    assert "hub.celery_app" in graph["hub.core"]  # imported inside a function
    assert "hub.core" not in graph["hub.operations"]  # only under TYPE_CHECKING


def test_no_import_cycles_among_hub_modules():
    assert cycles(import_graph()) == []
