"""The part of a configuration that differs from the defaults, as `finetune show-config` prints it
(``--all`` prints everything)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def non_defaults(config: BaseModel) -> dict[str, Any]:
    """The keys of ``config`` (JSON values, nested as in the YAML) whose value is not the default;
    a required key (no default, e.g. ``data.train``) is always kept."""
    return _differences(config, None)


def _differences(model: BaseModel, default: BaseModel | None) -> dict[str, Any]:
    """Keys of ``model`` that differ from ``default`` (None: from each field's own default)."""
    shown: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if default is not None:
            base, has_base = getattr(default, name), True
        elif field.is_required():
            base, has_base = None, False
        else:
            base, has_base = field.get_default(call_default_factory=True), True
        if isinstance(value, BaseModel):
            inner = _differences(value, base if isinstance(base, BaseModel) else None)
            if inner or not has_base:
                shown[name] = inner
        elif not has_base or value != base:
            shown[name] = model.model_dump(mode="json", include={name})[name]
    return shown
