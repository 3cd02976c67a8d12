"""Frozen-backbone features: computed once per (backbone, texts, max_length), cached on disk.

While the backbone is frozen, every epoch would recompute the same outputs; instead the
frozen stage trains the head on these cached features, and backbone selection reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from finetune_core.batching import Encoded, collate, sorted_batches
from finetune_core.heads import HeadSpec

DEFAULT_CACHE = Path(os.environ.get("FINETUNE_CACHE", Path.home() / ".cache" / "finetune")) / "features"


def backbone_identity(name_or_path: str) -> str:
    """A local backbone is identified by its files (so retrained weights miss the cache); a hub id by name."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    digest = hashlib.sha256(str(path.resolve()).encode())
    for file in sorted(path.iterdir()):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def texts_digest(encoded: Encoded) -> str:
    digest = hashlib.sha256()
    for ids in encoded.input_ids:
        digest.update(np.asarray(ids, dtype=np.int32).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def cache_key(backbone: str, encoded: Encoded, max_length: int, precision: str, pooling: str) -> str:
    payload = json.dumps([backbone_identity(backbone), texts_digest(encoded), max_length, precision, pooling, 1])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@torch.inference_mode()
def extract_features(model, spec: HeadSpec, encoded: Encoded, batch_size: int, device, autocast) -> torch.Tensor:
    """What the head sees, for every row in original order (backbone in eval mode, sorted batches)."""
    model.eval()
    rows: list[torch.Tensor | None] = [None] * len(encoded)
    for batch in sorted_batches(encoded.lengths, batch_size):
        inputs = {k: v.to(device) for k, v in collate(encoded, batch).items()}
        with autocast():
            features = spec.features(model, inputs).float().cpu()
        for row, index in enumerate(batch):
            rows[index] = features[row]
    return torch.stack(rows)


def _extract_missing(model, spec, encoded: Encoded, batch_size, device, autocast, known) -> torch.Tensor:
    """Features of every row; rows in ``known`` (indexes, features) are not computed again."""
    if known is None:
        return extract_features(model, spec, encoded, batch_size, device, autocast)
    indexes, values = known
    features = torch.empty((len(encoded), values.shape[1]), dtype=values.dtype)
    features[indexes] = values
    missing = np.setdiff1d(np.arange(len(encoded)), indexes)
    if len(missing):
        subset = Encoded([encoded.input_ids[i] for i in missing], encoded.pad_id)
        features[missing] = extract_features(model, spec, subset, batch_size, device, autocast)
    return features


def cached_features(
    model, spec, encoded: Encoded, backbone: str, max_length: int, batch_size: int, device, autocast, precision: str,
    pooling: str, cache_dir: Path | None, known: tuple[np.ndarray, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, bool]:
    """(features, hit). ``cache_dir=None`` disables the disk cache; ``known``: (row indexes,
    features) already extracted, e.g. by backbone selection."""
    if cache_dir is None:
        return _extract_missing(model, spec, encoded, batch_size, device, autocast, known), False
    path = Path(cache_dir) / f"{cache_key(backbone, encoded, max_length, precision, pooling)}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True), True
    features = _extract_missing(model, spec, encoded, batch_size, device, autocast, known)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(features, scratch)
    scratch.replace(path)  # atomic: a concurrent reader never sees half a file
    return features, False


def load_known_features(path: Path | None, pooling: str, precision: str, max_length: int):
    """(indexes, features) saved by backbone selection, if they match what this stage reads."""
    if path is None or not Path(path).is_file():
        return None
    saved = torch.load(path, weights_only=True)
    if (saved["pooling"], saved["precision"], saved["max_length"]) != (pooling, precision, max_length):
        return None
    return saved["indexes"].numpy(), saved["features"]
