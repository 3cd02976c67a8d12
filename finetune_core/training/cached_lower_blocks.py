"""Stage 2 with the lower layers frozen (``training.unfrozen.freeze_layers``): the embeddings and
the lowest N blocks never change, so their outputs for train and validation come from the layer
cache (finetune_core.model.layer_cache) and each step runs blocks N..L, pooling and head only,
forward and backward. Dropout in the frozen part is off, as it is in the cached pass.

The batches are the ones the full network would see (same length-grouped order from the same
seed, same DDP shares), gathered from the cache and padded; the saved model stays the full model
(its lower weights untouched).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finetune_core.model.batching import BatchLimit, Encoded
from finetune_core.model.encoder_split import block_output, lower_weights_digest, upper_spec
from finetune_core.model.features import DEFAULT_CACHE
from finetune_core.model.heads import HeadSpec
from finetune_core.model.inference import outputs_in_row_order
from finetune_core.model.layer_cache import (
    LayerCache,
    LayerWriter,
    cached_layer_states,
    is_cached,
    layer_cache_path,
)
from finetune_core.progress import SILENT
from finetune_core.training.device import eval_batches

# Batches pad to their longest row: padding to a multiple of 8 was slower on CPU
# (docs/benchmarks/engine-levers.md).
PAD_TO = 1


def layer_cache_dir(training, frozen_model_dir: Path) -> Path:
    """The feature cache's directory when that is on (re-runs reuse it); else one beside the
    stage-1 model, in the run directory (resume and later epochs reuse it)."""
    if training.feature_cache:
        return Path(training.cache_dir or DEFAULT_CACHE)
    return run_layer_cache_dir(frozen_model_dir)


def run_layer_cache_dir(frozen_model_dir: Path) -> Path:
    return Path(frozen_model_dir).parent / "layer-cache"


@dataclass
class UpperPart:
    frozen: int
    spec: HeadSpec  # features from cached states through the upper blocks
    train: LayerCache
    validation: LayerCache
    extra: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)  # split -> cache file


def open_caches(
    network, spec: HeadSpec, pooling: str, frozen: int, *, splits, paths, runtime, training, ddp=None, progress=SILENT
) -> UpperPart:
    """The upper part of ``network`` over the train and validation caches, computed if missing.
    Data-parallel: local rank 0 of each node computes a missing cache while the other ranks wait
    at a barrier, then open it (a node-local cache directory works; a shared one is renamed into
    place atomically, so two nodes writing it at once is harmless)."""
    import torch.distributed as dist

    waits, runtime = ddp is not None and ddp.local_rank != 0, runtime.for_inference()
    if waits:
        dist.barrier()
    started, caches, hits = time.perf_counter(), {}, 0
    for split in ("train", "validation"):
        caches[split], hit = cached_layer_states(
            network,
            frozen,
            splits[split],
            paths[split],
            eval_batches(training, runtime),
            runtime.device,
            runtime.autocast,
            progress,
            f"{split} layer cache",
        )
        hits += int(hit)
    if ddp is not None and not waits:
        dist.barrier()
    extra = {
        "freeze_layers": frozen,
        "layer_cache_hits": hits,
        "layer_cache_seconds": time.perf_counter() - started,
        "layer_cache_bytes_per_row": caches["train"].bytes_per_row,
    }
    return UpperPart(frozen, upper_spec(spec, pooling, frozen), caches["train"], caches["validation"], extra, paths)


def discard(part: UpperPart, ddp=None) -> None:
    """Remove a cache no later run can use (blocks trained in this run, ``freeze_after_epochs``) once
    the stage is done: 10 KB a row of SST-2, ~560 MB for its whole train set. Local rank 0 of each
    node, which wrote it; a rank still reading keeps its open map (POSIX unlink)."""
    if ddp is None or ddp.local_rank == 0:
        for path in part.paths.values():
            Path(path).unlink(missing_ok=True)


def without_parameters(groups: list[dict], names: set[str]) -> list[dict]:
    """``optim.layerwise_groups`` without the frozen parameters (empty groups dropped)."""
    if not names:
        return groups
    kept = []
    for group in groups:
        pairs = [(n, p) for n, p in zip(group["names"], group["params"]) if n not in names]
        if pairs:
            kept.append({**group, "names": [n for n, _ in pairs], "params": [p for _, p in pairs]})
    return kept


def cache_paths(
    cache_dir: Path, backbone: str, splits: dict[str, Encoded], max_length: int, precision: str, frozen, weights=None
):
    return {
        s: layer_cache_path(cache_dir, backbone, e, max_length, precision, frozen, weights) for s, e in splits.items()
    }


def stage_part(network, spec, meta, frozen, *, splits, checkpoint, runtime, training, ddp, progress, trained=False):
    """The upper part for stage 2 over the train and validation caches of ``frozen`` blocks.
    ``trained``: the lower blocks trained in this run before freezing (``freeze_after_epochs``), so
    their cache is keyed by their weights and lives in the run directory (no other run has them)."""
    if trained:
        directory, weights = run_layer_cache_dir(checkpoint), lower_weights_digest(network, frozen)
    else:
        directory, weights = layer_cache_dir(training, checkpoint), None
    precision = runtime.for_inference().precision  # the caches are filled by inference passes
    paths = cache_paths(directory, meta.backbone, splits, training.max_length, precision, frozen, weights)
    return open_caches(
        network,
        spec,
        meta.pooling,
        frozen,
        splits=splits,
        paths=paths,
        runtime=runtime,
        training=training,
        ddp=ddp,
        progress=progress,
    )


def writers_for(model, splits: dict[str, Encoded], paths: dict[str, Path]) -> dict[str, LayerWriter]:
    """Writers for the splits whose cache is missing (the frozen stage fills them as it extracts)."""
    return {s: LayerWriter(paths[s], splits[s], model.config.hidden_size) for s in splits if not is_cached(paths[s])}


def finish_writers(
    writers: dict[str, LayerWriter], model, frozen: int, runtime, batch_size: BatchLimit, progress=SILENT
):
    """Rows the features pass did not compute (a feature-cache hit, selection's rows), then commit."""
    runtime = runtime.for_inference()
    for split, writer in writers.items():
        writer.fill(model, frozen, batch_size, runtime.device, runtime.autocast, progress, f"{split} layer cache")
        writer.commit()


@contextlib.contextmanager
def filling(model, frozen: int, writer: LayerWriter | None, rows: np.ndarray | None = None):
    """The ``tap`` that fills ``writer`` from a features pass over one split (None without one);
    ``rows``: the split's rows that pass covers, by position (None: all of them, in order)."""
    if writer is None:
        yield None
        return
    with block_output(model, frozen) as captured:
        yield writer.tap(captured, rows)


def cached_inputs(cache: LayerCache):
    """``loop.network_epoch``'s ``inputs_of`` for cached lower-block states: the same batches, DDP
    shares, loss weighting and deadline; only the upper blocks, pooling and head run (frozen
    parameters have no gradient, so clipping skips them)."""
    return lambda rows: cache.batch(rows, PAD_TO)


def upper_outputs(network, spec: HeadSpec, cache: LayerCache, batch_size: BatchLimit, runtime) -> np.ndarray:
    """Raw outputs on every cached row, in row order (``inference.predict_outputs`` on the cache)."""
    runtime = runtime.for_inference()
    return outputs_in_row_order(
        network,
        spec,
        cache.lengths,
        lambda rows: cache.batch(rows, PAD_TO),
        batch_size,
        runtime.device,
        runtime.autocast,
    )
