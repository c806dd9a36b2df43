"""The house stays tidy: no import cycles between modules, none grows past ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.daemons import ROOT

SOURCE = ROOT / "daemon"
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("assistantd", *parts))


def _runtime_imports(path: Path) -> set[str]:
    """assistantd modules imported when the module runs (TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("assistantd"):
                    found.add(node.module)
                    found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("assistantd"))
            for field in ("body", "orelse", "finalbody", "handlers"):
                child = getattr(node, field, None)
                if isinstance(child, list) and not isinstance(node, ast.If | ast.Import):
                    visit([c for c in child if isinstance(c, ast.stmt)])

    visit(tree.body)
    return found


def test_no_import_cycles() -> None:
    modules = {_module_name(p): p for p in SOURCE.rglob("*.py")}
    graph = {
        name: {m for m in _runtime_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    # Parents import nothing of note; a package's __init__ is not a dependency edge.
    graph = {k: {m for m in v if not k.startswith(m + ".")} for k, v in graph.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def walk(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " → ".join(
            visiting[visiting.index(node) :] + [node]
        )
        visiting.append(node)
        for nxt in sorted(graph[node]):
            walk(nxt)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        walk(name)


def test_modules_stay_small() -> None:
    sizes = {p: len(p.read_text().splitlines()) for p in SOURCE.rglob("*.py")}
    too_big = {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > MAX_LINES}
    assert not too_big, f"split these modules (one concern each): {too_big}"
