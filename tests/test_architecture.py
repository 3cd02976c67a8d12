"""The library's shape, checked from its source: `finetune_core` imports neither Prefect nor
MLflow, has no import cycle (imports inside functions included), and `@task`s live in `tasks/`."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "finetune_core"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module an import statement anywhere in the file names (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # an import of a package counts as an edge to its __init__; of a name in a module, to the module
        graph[name] = {target for target in _imports(path) if target in modules and target != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_library_imports_neither_prefect_nor_mlflow():
    offenders = {
        _module_name(p): sorted(i for i in _imports(p) if i.split(".")[0] in ("prefect", "mlflow"))
        for p in CORE.rglob("*.py")
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_library_has_no_import_cycle():
    assert _cycle(_graph()) is None


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_prefect_tasks_live_in_tasks():
    outside = [
        str(p.relative_to(REPO))
        for folder in ("flows", "finetune_core")
        for p in (REPO / folder).rglob("*.py")
        if "@task" in p.read_text(encoding="utf-8")
    ]
    assert outside == []
