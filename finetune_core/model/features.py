"""Frozen-backbone features: computed once per (backbone, texts, max_length), cached on disk.

While the backbone is frozen, every epoch would recompute the same outputs; instead the
frozen stage trains the head on these cached features, and backbone selection reuses them.
The cache is a .npy file written row batch by row batch and read back memory-mapped, so a
training set's features never need to fit in RAM. Extraction reports its batches to an optional
``ProgressReporter`` (a cache hit reports nothing: there is nothing to wait for).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from finetune_core.durable import CacheWrite, verified_cache
from finetune_core.faults import maybe_kill
from finetune_core.model.batching import ArrowTokens, BatchLimit, Encoded, collate, sorted_batches
from finetune_core.model.heads import HeadSpec
from finetune_core.progress import SILENT, ProgressReporter

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
    """Of the lengths, then every id in row order: the same for a list and an Arrow store."""
    digest = hashlib.sha256(encoded.lengths.tobytes())
    _digest_rows(digest, encoded.input_ids)
    if encoded.token_type_ids is not None:  # sentence pairs: where the second text starts is part of the input
        digest.update(b"token_type_ids")
        _digest_rows(digest, encoded.token_type_ids)
    return digest.hexdigest()


def _digest_rows(digest, rows) -> None:
    if isinstance(rows, ArrowTokens):  # a chunk's rows are contiguous in its values buffer
        for offsets, values in rows.parts:
            digest.update(np.ascontiguousarray(values[offsets[0] : offsets[-1]], dtype=np.int32))
    else:
        for ids in rows:
            digest.update(np.asarray(ids, dtype=np.int32).tobytes())


def cache_key(backbone: str, encoded: Encoded, max_length: int, precision: str, pooling: str) -> str:
    payload = json.dumps([backbone_identity(backbone), texts_digest(encoded), max_length, precision, pooling, 2])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@torch.inference_mode()
def _write_features(
    model,
    spec: HeadSpec,
    encoded: Encoded,
    rows: np.ndarray,
    batch_size: int | BatchLimit,
    device,
    autocast,
    out,
    progress: ProgressReporter = SILENT,
    task: str = "features",
    tap=None,
):
    """Features of ``rows`` into ``out[rows]``, one sorted batch at a time. ``out`` is an array,
    or a function of the feature width making one (the width is known after the first batch).
    ``tap(rows, inputs)`` runs after each batch (the layer cache takes its hidden states from the
    same pass). Returns the array (``out`` unchanged when there were no rows)."""
    model.eval()
    batches = sorted_batches(encoded.lengths[rows], batch_size)
    progress.start(task, len(batches))
    for batch in batches:
        index = rows[batch]
        inputs = {k: v.to(device) for k, v in collate(encoded, index).items()}
        with autocast():
            features = spec.features(model, inputs).float().cpu().numpy()
        if callable(out):
            out = out(features.shape[1])
        out[index] = features
        if tap is not None:
            tap(index, inputs)
        progress.advance(1, len(index))
    progress.end()
    return out


def extract_features(
    model, spec: HeadSpec, encoded: Encoded, batch_size: int | BatchLimit, device, autocast
) -> torch.Tensor:
    """What the head sees, for every row in original order (backbone in eval mode, sorted batches)."""
    rows = np.arange(len(encoded))
    out = _write_features(
        model,
        spec,
        encoded,
        rows,
        batch_size,
        device,
        autocast,
        lambda width: np.empty((len(encoded), width), dtype=np.float32),
    )
    if callable(out):  # no rows
        out = np.empty((0, 0), dtype=np.float32)
    return torch.from_numpy(out)


def _extract_missing(
    model, spec, encoded: Encoded, batch_size, device, autocast, known, allocate, progress, task, tap=None
) -> np.ndarray:
    """Features of every row into ``allocate(width)``'s array; rows in ``known`` (indexes,
    features) are copied, not computed again."""
    if known is None:
        out, rows = allocate, np.arange(len(encoded))
    else:
        indexes, values = known
        out = allocate(values.shape[1])
        out[indexes] = values.float().numpy()
        rows = np.setdiff1d(np.arange(len(encoded)), indexes)
    out = _write_features(model, spec, encoded, rows, batch_size, device, autocast, out, progress, task, tap)
    return allocate(0) if callable(out) else out  # no rows at all: an empty (0, 0) array


@dataclass(frozen=True)
class FeatureSettings:
    """How a split's features are computed and where they are cached: the same for every split of a stage."""

    max_length: int
    batch_size: int | BatchLimit
    device: object
    autocast: object  # a context-manager factory (``Runtime.autocast``)
    precision: str
    pooling: str
    cache_dir: Path | None  # None: no disk cache (features in memory)


def cached_features(
    model,
    spec,
    encoded: Encoded,
    backbone: str,
    settings: FeatureSettings,
    *,
    known: tuple[np.ndarray, torch.Tensor] | None = None,
    progress: ProgressReporter = SILENT,
    task: str = "features",
    tap=None,
) -> tuple[torch.Tensor, bool]:
    """(features, hit). ``cache_dir=None`` disables the disk cache (features in memory);
    otherwise they are memory-mapped from it. ``known``: (row indexes, features) already
    extracted, e.g. by backbone selection. ``progress`` hears the batches computed, as ``task``.
    ``tap(rows, inputs)``: called after each batch computed (none on a hit)."""
    batch_size, device, autocast, cache_dir = (
        settings.batch_size,
        settings.device,
        settings.autocast,
        settings.cache_dir,
    )
    if cache_dir is None:
        in_memory = lambda width: np.empty((len(encoded), width), dtype=np.float32)  # noqa: E731
        args = (batch_size, device, autocast, known, in_memory, progress, task, tap)
        return torch.from_numpy(_extract_missing(model, spec, encoded, *args)), False
    path = (
        Path(cache_dir)
        / f"{cache_key(backbone, encoded, settings.max_length, settings.precision, settings.pooling)}.npy"
    )
    with verified_cache(path) as whole:
        if whole:
            return _open_features(path), True
    write = CacheWrite(path)  # a file without a matching index (half-written, foreign) is rebuilt

    def allocate(width):  # rows go straight to disk: no copy of the whole array in memory
        return np.lib.format.open_memmap(write.scratch, mode="w+", dtype=np.float32, shape=(len(encoded), width))

    def after_batch(rows, inputs) -> None:
        if tap is not None:
            tap(rows, inputs)
        maybe_kill("features")  # the resume tests' kill with a half-written cache file

    try:
        _extract_missing(
            model, spec, encoded, batch_size, device, autocast, known, allocate, progress, task, after_batch
        ).flush()
        features = _open_features(write.scratch)  # this writer's own file, whoever renames last
        write.commit()
    except BaseException:
        write.discard()
        raise
    return features, False


def _open_features(path: Path) -> torch.Tensor:
    # copy-on-write: torch wants a writable array, and a write must never reach the shared cache
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def load_known_features(path: Path | None, pooling: str, precision: str, max_length: int):
    """(indexes, features) saved by backbone selection, if they match what this stage reads."""
    if path is None or not Path(path).is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError):  # cut by a kill: extracted again instead
        return None
    if (saved["pooling"], saved["precision"], saved["max_length"]) != (pooling, precision, max_length):
        return None
    return saved["indexes"].numpy(), saved["features"]


def known_within(known, rows: np.ndarray):
    """``known`` (indexes into a split, features) restricted to the sorted positions ``rows`` of
    it, indexes renumbered to positions within ``rows``."""
    if known is None:
        return None
    indexes, values = known
    at = np.searchsorted(rows, indexes)
    hit = (at < len(rows)) & (rows[np.minimum(at, len(rows) - 1)] == indexes)
    return at[hit], values[torch.from_numpy(hit)]
