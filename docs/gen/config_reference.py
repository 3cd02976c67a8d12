"""Writes docs/reference/configuration.md from the configuration's Pydantic models (finetune_core/config/):
every field's dotted key, type, default and description, grouped by who sets it.

Run from the repository root: ``python -m docs.gen.config_reference`` (``make docs-gen`` runs every generator).
tests/test_docs.py fails when the page is not what this writes now.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.retired import RETIRED, RETIRED_ON

PAGE = Path(__file__).resolve().parents[1] / "reference" / "configuration.md"
COMMAND = "python -m docs.gen.config_reference"

# Who sets a key: the longest matching prefix decides. "every-run": what describes your data and where
# results go; "tuning": what changes what the model learns; "engine": how the engine computes
# (devices, processes, caches, batching), which changes speed, not what is learnt. An engine choice
# measured better everywhere is no key at all: it is retired (finetune_core/config/retired.py).
AUDIENCE: dict[str, str] = {
    "task": "every-run",
    "data": "every-run",
    "backbone.candidates": "every-run",
    "mlflow": "every-run",
    "output_dir": "every-run",
    "training": "tuning",
    "backbone": "tuning",
    "validation": "tuning",
    "augmentation": "tuning",
    "gates": "tuning",
    "search": "tuning",
    "training.eval_batch_size": "engine",
    "training.eval_batch_tokens": "engine",
    "training.precision": "engine",
    "training.device": "engine",
    "training.num_threads": "engine",
    "training.num_processes": "engine",
    "training.launcher": "engine",
    "training.ray_address": "engine",
    "training.torchrun_args": "engine",
    "training.max_restarts": "engine",
    "training.feature_cache": "engine",
    "training.cache_dir": "engine",
    "backbone.task_runner": "engine",
    "backbone.selection_workers": "engine",
    "backbone.dask_address": "engine",
    "validation.chunk_rows": "engine",
    "validation.examples": "engine",
    "serving": "engine",
}

GROUPS: dict[str, tuple[str, str]] = {
    "every-run": (
        "Every run",
        "What every configuration names: the task, the data files and their columns, the backbone, and where "
        "results are recorded.",
    ),
    "tuning": (
        "Tuning",
        "What changes what the model learns or what a run accepts: the recipe, its stages, backbone selection, "
        "data validation thresholds, augmentation and the evaluation gates. The defaults are measured; the "
        "[decision records](../decisions/index.md) say why.",
    ),
    "engine": (
        "Engine internals",
        "How the engine computes and serves: device, precision, processes, caches, batching and "
        "the served form of the model. These change speed and where things run, not what is learnt (up to float "
        "rounding, random draws, and a quantised form that passed its parity gate).",
    ),
}


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


def audience(key: str) -> str:
    """The group of ``key``: its longest prefix (whole dotted parts) in AUDIENCE."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in AUDIENCE:
            return AUDIENCE[prefix]
    raise KeyError(f"{key}: no entry in AUDIENCE (docs/gen/config_reference.py)")


def _nested_model(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def walk_fields(model: type[BaseModel] = FinetuneConfig, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every field of ``model`` and its sub-models, depth first, as (dotted key, field)."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        yield key, field
        nested = _nested_model(field.annotation)
        if nested is not None:
            yield from walk_fields(nested, f"{key}.")


def leaf_fields() -> Iterator[tuple[str, FieldInfo]]:
    """The fields a user sets a value for (sub-model sections are their headings, not rows)."""
    return ((key, field) for key, field in walk_fields() if _nested_model(field.annotation) is None)


def format_type(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if origin is typing.Annotated:
        return format_type(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(format_type(arg) for arg in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(format_type(arg) for arg in args)}]"
    if annotation is type(None):
        return "null"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


BOUNDS = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", "≥"), (annotated_types.Lt, "lt", "<"))
BOUNDS += ((annotated_types.Le, "le", "≤"), (annotated_types.MinLen, "min_length", "length ≥"))


def format_bounds(field: FieldInfo) -> str:
    found = []
    for constraint in field.metadata:
        for kind, attribute, symbol in BOUNDS:
            if isinstance(constraint, kind):
                found.append(f"{symbol} {getattr(constraint, attribute)}")
    return f" ({', '.join(found)})" if found else ""


def format_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def cell(text: str) -> str:
    """``text`` on one line, for a Markdown table cell: pipes escaped outside code spans (inside them a table
    already ignores pipes, and an escape would show)."""
    parts = " ".join((text or "").split()).split("`")
    return "`".join(part if inside else part.replace("|", "\\|") for inside, part in zip([0, 1] * len(parts), parts))


def rows() -> list[Row]:
    return [
        Row(
            key=key,
            type=cell(format_type(field.annotation) + format_bounds(field)),
            default=cell(format_default(field)),
            description=cell(field.description or ""),
        )
        for key, field in leaf_fields()
    ]


HEADER = """<!-- generated by `{command}` from finetune_core/config/: do not edit by hand -->
# Configuration reference

One YAML file, validated by the Pydantic model `FinetuneConfig` (`finetune_core/config/`). Unknown keys and bad
values are rejected with their dotted path (`training.frozen.epochz: unknown key`); cross-field contradictions are
rejected in one place (`FinetuneConfig._check_consistency`); a [retired key](#retired-keys) still loads, with a
warning. Data paths are relative to the configuration file; paths given with `--set` are relative to the working
directory. `--set` values are read as YAML (`--set training.batch_size=16`, `--set backbone.candidates=[a/b,./c]`).
`finetune show-config CONFIG` prints what a configuration sets apart from the defaults (`--all`: every key). How
the keys fit together: [Concepts](../concepts/pipeline.md).

Types: `one of a, b` is a fixed set of strings; `null` means unset; bounds follow the type.
"""


RETIRED_INTRO = """
## Retired keys

Engine choices measured better everywhere are fixed behaviour, not keys. A configuration that still sets one
(a champion's recorded `config.yaml`, an old file) loads: the key is dropped with a warning that names it, says
what the engine does now and, when the value asked for something else, that the value is ignored.

| key | retired | what the engine does now | why |
|---|---|---|---|
"""


def retired_rows() -> list[str]:
    """The retired keys' table rows, from finetune_core/config/retired.py."""
    return [
        f"| `{key}` | {RETIRED_ON} | {cell(retired.now)} | [decision](../{retired.record}) |\n"
        for key, retired in RETIRED.items()
    ]


def render() -> str:
    """The whole page, as this generator writes it now."""
    grouped: dict[str, list[Row]] = {group: [] for group in GROUPS}
    for row in rows():
        grouped[audience(row.key)].append(row)
    parts = [HEADER.format(command=COMMAND)]
    for group, (title, intro) in GROUPS.items():
        parts.append(f"\n## {title}\n\n{intro}\n\n| key | type | default | description |\n|---|---|---|---|\n")
        parts.extend(f"| `{r.key}` | {r.type} | {r.default} | {r.description} |\n" for r in grouped[group])
    parts.append(RETIRED_INTRO)
    parts.extend(retired_rows())
    return "".join(parts)


def main() -> None:
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(render())
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
