"""Load a configuration from YAML with ``--set dotted.key=value`` overrides; errors name the
field; ``flatten`` gives the dotted view MLflow params use."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.retired import drop_retired
from finetune_core.errors import ConfigError

logger = logging.getLogger(__name__)


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "config"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{path}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """Parse ``dotted.key=value``; the value is read as YAML (numbers, booleans, lists)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    merged = copy.deepcopy(raw)
    for assignment in overrides:
        path, value = parse_override(assignment)
        node = merged
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {'.'.join(path)}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return merged


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    """Data paths in a config file are relative to that file, so configs work from any directory."""
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("train", "validation", "test"):
            value = data.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                data[key] = str((base / value).resolve())


def validate_config(raw: dict[str, Any], notices: list[str] | None = None) -> FinetuneConfig:
    """``raw`` validated. Every configuration passes here (a file, ``--set``, a champion's recorded
    config.yaml, a trial's): a retired key (config.retired) is dropped first and warned about once, as a
    logged warning and a line appended to ``notices`` for a command to show."""
    raw, dropped = drop_retired(raw)
    for line in dropped:
        logger.warning(line)
    if notices is not None:
        notices.extend(dropped)
    try:
        return FinetuneConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def load_config(
    path: str | Path, overrides: list[str] | None = None, notices: list[str] | None = None
) -> FinetuneConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _resolve_relative_paths(raw, path.parent)
    # Overrides come after: a path given on the command line is relative to the working directory.
    return validate_config(apply_overrides(raw, overrides or []), notices)


def flatten(config: FinetuneConfig) -> dict[str, str]:
    """Dotted key -> string value, for MLflow params."""
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = json.dumps(node) if isinstance(node, (list, dict)) else str(node)

    walk("", config.for_record())
    return flat
