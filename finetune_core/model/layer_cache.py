"""Cached outputs of the frozen lower blocks (``training.unfrozen.freeze_layers``): per-token hidden
states of every row, computed once and memory-mapped for all stage-2 epochs.

Layout: one ``.npy`` of shape [tokens of all rows, hidden] in float16 (rows unpadded, concatenated
in row order; row r is ``[offsets[r], offsets[r + 1])`` with offsets from the token lengths, which
the key covers). float16 rather than bfloat16: numpy has no bfloat16, and hidden states after
LayerNorm are small numbers where float16's 10-bit mantissa keeps 8x bfloat16's precision. Bytes per
row = 2 × hidden × tokens. Rows are written straight to the memory map as batches finish, so a split
larger than memory streams to disk; a temporary name is renamed into place when complete, with an
index (size, checksum) that a reader checks first (finetune_core.durable).

The key is the feature cache's (backbone files, token ids, max length, precision) plus the number of
frozen blocks. The frozen stage fills the cache in the same forward pass that extracts its features
(``LayerWriter.tap`` on a ``partial.block_output`` hook); rows it did not compute (a feature-cache
hit, rows backbone selection extracted) are filled by a pass that stops after the frozen blocks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from finetune_core.durable import CacheWrite, verified_cache
from finetune_core.faults import maybe_kill
from finetune_core.model.batching import BatchLimit, Encoded, collate, sorted_batches
from finetune_core.model.encoder_split import lower_hidden_states
from finetune_core.model.features import backbone_identity, texts_digest
from finetune_core.progress import SILENT, ProgressReporter

STORAGE = np.float16


def layer_cache_path(
    cache_dir: Path, backbone: str, encoded: Encoded, max_length: int, precision: str, frozen: int, weights=None
):
    """``weights``: a digest of the frozen parameters when they were trained in this run before
    freezing (``freeze_after_epochs``); the backbone's files no longer identify them."""
    key = [backbone_identity(backbone), texts_digest(encoded), max_length, precision, frozen, 1]
    payload = json.dumps(key + ([weights] if weights else []))
    return Path(cache_dir) / f"{hashlib.sha256(payload.encode()).hexdigest()[:24]}.layer{frozen}.npy"


class LayerCache:
    """Rows of cached hidden states; ``batch(rows)`` gathers and pads them for the upper blocks."""

    def __init__(self, states: np.ndarray, lengths: np.ndarray):
        self.states, self.lengths = states, np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        if self.offsets[-1] != len(states):
            raise ValueError(f"layer cache holds {len(states)} tokens, the rows have {self.offsets[-1]}")

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def bytes_per_row(self) -> float:
        return self.states.nbytes / max(len(self), 1)

    def batch(self, rows, pad_to: int = 1) -> dict[str, torch.Tensor]:
        """{"hidden_states": [rows, width, hidden] float32, "attention_mask": [rows, width]}, width the
        longest row rounded up to ``pad_to``."""
        lengths = self.lengths[rows]
        width = -(-int(lengths.max()) // pad_to) * pad_to
        hidden = np.zeros((len(rows), width, self.states.shape[1]), dtype=self.states.dtype)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, (row, length) in enumerate(zip(rows, lengths)):
            start = self.offsets[row]
            hidden[r, :length] = self.states[start : start + length]
            mask[r, :length] = 1
        return {"hidden_states": torch.from_numpy(hidden).float(), "attention_mask": torch.from_numpy(mask)}


def open_layer_cache(path: Path, encoded: Encoded) -> LayerCache:
    return LayerCache(np.load(path, mmap_mode="r"), encoded.lengths)


class LayerWriter:
    """Fills one split's cache file: from batches of a forward pass (``tap``), then whatever rows are
    still missing (``fill``); ``commit`` renames it into place and opens it."""

    def __init__(self, path: Path, encoded: Encoded, width: int):
        self.path, self.encoded = Path(path), encoded
        self.file = CacheWrite(self.path)  # this writer's temporary file, renamed in with an index
        self.scratch = self.file.scratch
        self.lengths = encoded.lengths
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        tokens = int(self.offsets[-1])
        self.states = np.lib.format.open_memmap(self.scratch, mode="w+", dtype=STORAGE, shape=(tokens, width))
        self.written = np.zeros(len(encoded), dtype=bool)

    def write(self, rows, hidden: torch.Tensor) -> None:
        values = hidden.float().cpu().numpy()
        for r, row in enumerate(rows):
            start, end = self.offsets[row], self.offsets[row + 1]
            self.states[start:end] = values[r, : end - start]
        self.written[rows] = True

    def tap(self, captured: list, rows_of=None):
        """A ``features`` tap: after each batch, the hidden states ``partial.block_output`` captured.
        ``rows_of``: this split's row for each row of the pass (a pass over a sample of it)."""

        positions = None if rows_of is None else np.asarray(rows_of)

        def after_batch(rows, inputs) -> None:
            self.write(rows if positions is None else positions[rows], captured.pop())

        return after_batch

    @torch.inference_mode()
    def fill(
        self, model, frozen: int, batch_size: int | BatchLimit, device, autocast, progress=SILENT, task="layer cache"
    ):
        """Rows not written yet, by a pass through the embeddings and the lowest ``frozen`` blocks."""
        missing = np.flatnonzero(~self.written)
        if len(missing) == 0:
            return
        was_training = model.training
        model.eval()
        batches = sorted_batches(self.lengths[missing], batch_size)
        progress.start(task, len(batches))
        for batch in batches:
            rows = missing[batch]
            inputs = {k: v.to(device) for k, v in collate(self.encoded, rows).items()}
            with autocast():
                self.write(rows, lower_hidden_states(model, inputs, frozen))
            progress.advance(1, len(rows))
            maybe_kill("layer-cache")  # the resume tests' kill with a half-written cache file
        progress.end()
        model.train(was_training)

    def commit(self) -> LayerCache:
        self.states.flush()
        del self.states  # close the map before the rename
        cache = open_layer_cache(self.scratch, self.encoded)  # this writer's own file, whoever renames last
        self.file.commit()
        return cache

    def discard(self) -> None:
        self.file.discard()


def is_cached(path: Path) -> bool:
    """Whether a whole cache file is at ``path`` (its index matches: not half-written, not foreign)."""
    with verified_cache(path) as whole:
        return whole


def cached_layer_states(
    model,
    frozen: int,
    encoded: Encoded,
    path: Path,
    batch_size: int | BatchLimit,
    device,
    autocast,
    progress: ProgressReporter = SILENT,
    task: str = "layer cache",
) -> tuple[LayerCache, bool]:
    """(cache, hit): the file at ``path`` when it exists, else computed by a lower-blocks pass."""
    with verified_cache(path) as whole:
        if whole:
            return open_layer_cache(path, encoded), True
    writer = LayerWriter(path, encoded, model.config.hidden_size)
    try:
        writer.fill(model, frozen, batch_size, device, autocast, progress, task)
        return writer.commit(), False
    except BaseException:
        writer.discard()
        raise
