"""The package's layout keeps the flow readable: no import cycles, no private names borrowed."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "audit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[tuple[str, str]]]:
    """Module -> {(imported module, name)}, every import in the file (lazy ones too)."""
    found: dict[str, set[tuple[str, str]]] = {}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        here = module_name(path)
        edges = found.setdefault(here, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {(a.name, "") for a in node.names if a.name.startswith("audit")}
            elif (
                isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("audit")
            ):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    edges.add((child, "") if child in modules else (node.module, alias.name))
    return found


def test_no_import_cycles() -> None:
    graph = {m: {target for target, _ in edges} for m, edges in imports().items()}
    assert len(graph) > 50, "the package was not found"

    def parents(name: str) -> list[str]:  # importing a.b.c runs a/__init__ and a/b/__init__
        parts = name.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts))]

    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target not in graph or target in parents(node):
                continue
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target) :] + [target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_private_name_is_imported_from_another_module() -> None:
    borrowed = [
        f"{module} imports {name} from {source}"
        for module, edges in imports().items()
        for source, name in edges
        if name.startswith("_") and not name.startswith("__")
    ]
    assert borrowed == []


def test_the_top_level_holds_only_the_entry_points_and_shared_definitions() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == [
        "__init__.py", "__main__.py", "cli.py", "commands.py", "constants.py", "errors.py",
        "pipeline.py",
    ]  # fmt: skip
