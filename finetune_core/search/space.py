"""The search space: dotted configuration keys checked against the configuration model, Optuna
distributions for them, and a configuration with a trial's values merged in."""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.loading import validate_config
from finetune_core.config.search import ParamRange
from finetune_core.errors import ConfigError

# What this project measured to matter (docs/decisions/stage2-learning-rate.md, docs/how-to/tune.md).
DEFAULT_SPACE = {
    "training.unfrozen.learning_rate": ParamRange(low=2e-5, high=3e-4, log=True),
    "training.unfrozen.layer_lr_decay": ParamRange(low=0.7, high=1.0),
    "training.unfrozen.epochs": ParamRange(low=2, high=5),
    "training.unfrozen.freeze_layers": ParamRange(low=0, high=3),
    "training.unfrozen.warmup_ratio": ParamRange(low=0.0, high=0.2),
    "training.unfrozen.dropout": ParamRange(low=0.0, high=0.2),
}
CONTRASTIVE_SPACE = {"training.contrastive.learning_rate": ParamRange(low=1e-5, high=1e-4, log=True)}


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str  # float, int or categorical
    bounds: ParamRange

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        b = self.bounds
        if self.kind == "categorical":
            return CategoricalDistribution(b.choices)
        if self.kind == "int":
            return IntDistribution(int(b.low), int(b.high), log=b.log, step=1 if b.log else int(b.step or 1))
        return FloatDistribution(b.low, b.high, log=b.log, step=None if b.log else b.step)

    def holds(self, value) -> bool:
        """``value`` is a point of this dimension (a choice, or inside the range; whole for an int key)."""
        b = self.bounds
        if self.kind == "categorical":
            return value in b.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return b.low <= value <= b.high and (self.kind != "int" or value == int(value))

    def describe(self) -> str:
        b = self.bounds
        if self.kind == "categorical":
            return f"{self.key} in {b.choices}"
        return f"{self.key} {self.kind} [{b.low:g}, {b.high:g}]{' log' if b.log else ''}"


def _field(key: str):
    """The pydantic field a dotted key names, or a ConfigError naming the key."""
    model: type[BaseModel] = FinetuneConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            raise ConfigError(f"search.space.{key}: unknown configuration key ({'.'.join(parts[: depth + 1])})")
        if depth == len(parts) - 1:
            return field
        inner = [a for a in _options(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not inner:
            raise ConfigError(f"search.space.{key}: {'.'.join(parts[: depth + 1])} is not a section")
        model = inner[0]
    raise ConfigError(f"search.space.{key}: empty key")


def _options(annotation) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _kind(key: str, bounds: ParamRange) -> str:
    options = _options(_field(key).annotation)
    if bounds.choices is not None:
        return "categorical"
    if isinstance(options[0], type) and issubclass(options[0], BaseModel):
        raise ConfigError(f"search.space.{key}: is a section, not a value")
    if options[0] is int:
        if bounds.low != int(bounds.low) or bounds.high != int(bounds.high):
            raise ConfigError(f"search.space.{key}: an integer key needs integer low and high")
        return "int"
    if options[0] is float:
        return "float"
    raise ConfigError(f"search.space.{key}: {options[0]} is not numeric; give `choices`")


def resolve_space(config: FinetuneConfig) -> dict[str, Dimension]:
    """The space of ``config.search`` (the default space, then its keys): every key a field of the
    configuration, every bound a value that field accepts; errors name the key."""
    search = config.search
    merged: dict[str, ParamRange | None] = {}
    if search.default_space:
        merged.update(DEFAULT_SPACE)
        if config.training.strategy == "contrastive":
            merged.update(CONTRASTIVE_SPACE)
    merged.update(search.space)
    space = {key: Dimension(key, _kind(key, b), b) for key, b in merged.items() if b is not None}
    if not space:
        raise ConfigError("search.space: empty (every key dropped and search.default_space false)")
    for dimension in space.values():
        b = dimension.bounds
        for value in b.choices if b.choices is not None else (b.low, b.high):
            if dimension.kind == "int":
                value = int(value)
            try:
                with_overrides(config, {dimension.key: value})
            except ConfigError as exc:
                raise ConfigError(f"search.space.{dimension.key}: {value!r} is refused: {exc}") from None
    return space


def distributions(space: dict[str, Dimension]) -> dict:
    return {key: dimension.distribution() for key, dimension in space.items()}


def given_point(config: FinetuneConfig, space: dict[str, Dimension], unset: dict[str, Any]) -> dict[str, Any]:
    """The configuration's own value of each dimension the space holds (``search.start_from_config``);
    ``unset``: what a key the configuration leaves None trains with (``search.trial.unset_values``)."""
    raw = config.model_dump(mode="json")
    point = {}
    for key, dimension in space.items():
        section, leaf = _section_of(raw, key)
        value = unset.get(key) if section[leaf] is None else section[leaf]
        if value is not None and dimension.holds(value):
            point[key] = int(value) if dimension.kind == "int" else value
    return point


def with_overrides(config: FinetuneConfig, values: dict[str, Any]) -> FinetuneConfig:
    """``config`` with dotted keys set to ``values`` (a trial's parameters, the study's best), validated."""
    raw = config.model_dump(mode="json")
    for key, value in values.items():
        section, leaf = _section_of(raw, key)
        section[leaf] = value
    return validate_config(raw)


def _section_of(raw: dict, key: str) -> tuple[dict, str]:
    """The dumped section a dotted key's last part is a field of, and that part."""
    *sections, leaf = key.split(".")
    for part in sections:
        raw = raw[part]
    return raw, leaf


def study_name(config: FinetuneConfig, space: dict[str, Dimension], inputs: str) -> str:
    """A study per configuration, input files (``inputs``: their digest) and space: the same sweep run
    again, or started by another worker, finds it."""
    described = json.dumps(
        {
            "config": config.fingerprint(),
            "inputs": inputs,
            "space": {k: d.bounds.model_dump() for k, d in sorted(space.items())},
        },
        sort_keys=True,
    )
    return f"{config.mlflow.experiment}-{hashlib.sha256(described.encode()).hexdigest()[:12]}"
