"""The library's shape, checked from its source: `finetune_core` imports neither Prefect nor
MLflow, has no import cycle, its rooms depend one way (`LAYERS`, imports inside functions
included), and `@task`s live in `tasks/`. docs/architecture.md draws the layers."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "finetune_core"


def _module_name(path: Path, repo: Path = REPO) -> str:
    parts = path.relative_to(repo).with_suffix("").parts
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


# The rooms of finetune_core, bottom first. A module may import its own room or a room on a lower
# layer, never one on its own layer or above. The foundation is the top-level modules (errors,
# environment, redaction, durable, faults, run_layout, progress, metric_table, batch_plan); `predict` is the shim
# old champions import, which nothing in the library imports.
LAYERS = (
    ("foundation",),
    ("config",),
    ("data",),
    ("model", "metrics"),
    ("serving", "augmentation"),
    ("training", "validation"),
    ("selection", "evaluation"),
    ("search",),
    ("predict",),
)
LAYER = {room: depth for depth, rooms in enumerate(LAYERS) for room in rooms}


def _room(module: str, core: Path) -> str:
    """A subpackage of finetune_core is a room; its top-level modules together are the foundation."""
    parts = module.split(".")
    if len(parts) == 1 or (core / f"{parts[1]}.py").exists() and parts[1] != "predict":
        return "foundation"
    return parts[1]


def _import_lines(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every finetune_core import in the file, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "finetune_core"]


def _back_edges(repo: Path) -> list[str]:
    """Every import from a room to its own layer's other rooms or to a layer above it."""
    core, offending = repo / "finetune_core", []
    for path in sorted(core.rglob("*.py")):
        source = _room(_module_name(path, repo), core)
        for line, target in _import_lines(path):
            room = _room(target, core)
            if room != source and LAYER[room] >= LAYER[source]:
                offending.append(
                    f"{path.relative_to(repo)}:{line} imports {target} "
                    f"({source}, layer {LAYER[source]} -> {room}, layer {LAYER[room]})"
                )
    return offending


def test_every_room_has_a_layer():
    rooms = {_room(_module_name(p), CORE) for p in CORE.rglob("*.py")}
    assert rooms - set(LAYER) == set(), "add the new room to LAYERS (and to docs/architecture.md)"


def test_rooms_import_only_lower_layers():
    assert _back_edges(REPO) == []


def test_the_layer_check_names_a_planted_back_edge(tmp_path):
    for folder in ("finetune_core/config", "finetune_core/training"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "finetune_core/__init__.py").write_text("")
    (tmp_path / "finetune_core/errors.py").write_text("")
    (tmp_path / "finetune_core/training/loop.py").write_text("from finetune_core.config import sections\n")
    late_import = "def late():\n    from finetune_core.training.loop import run\n"  # inside a function
    (tmp_path / "finetune_core/config/sections.py").write_text(
        f"from finetune_core.errors import ConfigError\n\n\n{late_import}"
    )
    assert _back_edges(tmp_path) == [
        "finetune_core/config/sections.py:5 imports finetune_core.training.loop (config, layer 1 -> training, layer 5)"
    ]


def test_prefect_tasks_live_in_tasks():
    outside = [
        str(p.relative_to(REPO))
        for folder in ("flows", "finetune_core")
        for p in (REPO / folder).rglob("*.py")
        if "@task" in p.read_text(encoding="utf-8")
    ]
    assert outside == []


def _decorated(folder: str, decorator: str, has: bool) -> list[str]:
    """The modules directly in ``folder`` that do (``has``) or do not define a ``decorator`` function."""
    return [
        str(p.relative_to(REPO))
        for p in sorted((REPO / folder).glob("*.py"))
        if p.name not in ("__init__.py", "__main__.py")
        and has == any(line.startswith(decorator) for line in p.read_text(encoding="utf-8").splitlines())
    ]


def test_each_room_holds_one_kind_of_thing():
    """Prefect tasks in `tasks/`, flows in `flows/`, commands in `flows/cli/`; the MLflow and Prefect I/O the tasks
    share, with no task, in `tasks/mlflow_io/` and `tasks/prefect_io/` (docs/architecture.md)."""
    assert _decorated("tasks", "@task", has=False) == []
    assert _decorated("flows", "@flow", has=False) == []
    for room in ("flows/cli", "tasks/mlflow_io", "tasks/prefect_io"):
        assert _decorated(room, "@task", has=True) + _decorated(room, "@flow", has=True) == []
