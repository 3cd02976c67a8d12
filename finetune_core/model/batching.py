"""Tokenise once, then batch with dynamic padding.

Training batches are grouped by length (shuffled megabatches sorted by length, as in
HF's LengthGroupedSampler) so little compute goes to padding; evaluation batches are
sorted by length and results are put back in the original order. An evaluation batch can also be
capped in padded tokens (``BatchLimit.tokens``): short rows then share large batches and long rows
go in small ones.

Token ids are a Python list (small inputs: serving, selection samples, tests) or an
``ArrowTokens`` store memory-mapped from disk (a training split, finetune_core.tokenized),
so a split larger than memory costs only its O(rows) lengths in RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from finetune_core.batch_plan import BatchLimit, sorted_batches  # noqa: F401  (re-exported: one definition)

MEGABATCH_FACTOR = 50


class ArrowTokens:
    """Rows of token ids in an Arrow list<int32> column; row i is a zero-copy numpy view of the
    values buffer (the pages of a memory-mapped file are read only when a batch needs them)."""

    def __init__(self, column):
        import pyarrow as pa  # not needed to serve a model, which tokenises in memory

        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        self.column = column  # holds the buffers (and the memory map) the views below point into
        # offsets of a sliced chunk index its unsliced values, so the pair stays consistent
        self.parts = [(c.offsets.to_numpy(), c.values.to_numpy()) for c in chunks if len(c)]
        self.starts = np.cumsum([0] + [len(offsets) - 1 for offsets, _ in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i) -> np.ndarray:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        offsets, values = self.parts[part]
        row = i - self.starts[part]
        return values[offsets[row] : offsets[row + 1]]

    def __iter__(self):
        for offsets, values in self.parts:
            for start, end in zip(offsets[:-1], offsets[1:]):
                yield values[start:end]

    def id_buffers(self):
        """Each chunk's ids of all its rows, one contiguous array each (no per-row views)."""
        for offsets, values in self.parts:
            yield values[offsets[0] : offsets[-1]]

    @property
    def lengths(self) -> np.ndarray:
        """From the offsets alone: no pass over the rows."""
        return np.concatenate(
            [np.diff(offsets).astype(np.int64) for offsets, _ in self.parts] or [np.zeros(0, np.int64)]
        )


@dataclass
class Encoded:
    input_ids: list[list[int]] | ArrowTokens
    pad_id: int
    # segment ids of sentence pairs, for tokenizers that use them (BERT: 0 for the first text, 1 for
    # the second); None for single texts and for tokenizers without them (RoBERTa, DistilBERT)
    token_type_ids: list[list[int]] | ArrowTokens | None = None

    @property
    def lengths(self) -> np.ndarray:
        if isinstance(self.input_ids, ArrowTokens):
            return self.input_ids.lengths
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize(tokenizer, columns: Sequence[Sequence[str]], max_length: int) -> tuple[list, list | None]:
    """(input ids, segment ids or None) of one text per row, or of a sentence pair per row when
    ``columns`` holds two (the tokenizer's own pair encoding); truncating the longer text first
    (``longest_first``, ``True``'s meaning for one text; as run_glue does)."""
    out = tokenizer(*(list(texts) for texts in columns), truncation="longest_first", max_length=max_length)
    # segment ids say where the second text starts: one text has none to say
    return out["input_ids"], out.get("token_type_ids") if len(columns) > 1 else None


def encode_columns(tokenizer, columns: Sequence[Sequence[str]], max_length: int) -> Encoded:
    """``columns``: the texts of each text column (one, or two for sentence pairs), in order."""
    ids, types = tokenize(tokenizer, columns, max_length)
    return Encoded(input_ids=ids, pad_id=tokenizer.pad_token_id or 0, token_type_ids=types)


def encode(tokenizer, texts: Sequence[str], max_length: int) -> Encoded:
    """One text per row."""
    return encode_columns(tokenizer, [texts], max_length)


def take_encoded(encoded: Encoded, rows: np.ndarray) -> Encoded:
    """Those rows, in that order (views of a memory-mapped store stay views)."""
    types = encoded.token_type_ids
    return Encoded(
        input_ids=[encoded.input_ids[i] for i in rows],
        pad_id=encoded.pad_id,
        token_type_ids=None if types is None else [types[i] for i in rows],
    )


def collate(encoded: Encoded, indices) -> dict[str, torch.Tensor]:
    rows = [encoded.input_ids[i] for i in indices]
    width = max(len(row) for row in rows)
    # filled in numpy: a row may be a list or a read-only view of a memory map, and both copy in
    input_ids = np.full((len(rows), width), encoded.pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        input_ids[r, : len(row)] = row
        attention_mask[r, : len(row)] = 1
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if encoded.token_type_ids is not None:
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(indices):
            types = encoded.token_type_ids[i]
            token_type_ids[r, : len(types)] = types
        batch["token_type_ids"] = torch.from_numpy(token_type_ids)
    return batch


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, cut into megabatches, sort each by length, cut into batches, shuffle batch order."""
    order = rng.permutation(len(lengths))
    megabatch = batch_size * MEGABATCH_FACTOR
    batches = []
    for start in range(0, len(order), megabatch):
        chunk = order[start : start + megabatch]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


# Most padded tokens in an inference batch on a CPU at fp32, where ~1,000-2,000-token batches ran
# fastest (GPUs and bf16 not measured: no cap there); docs/benchmarks/eval-batches.md.
CPU_FP32_BATCH_TOKENS = 1024


def inference_batch_tokens(setting: int | str, device_type: str, precision: str) -> int | None:
    """``training.eval_batch_tokens`` resolved: ``auto`` caps only where measured (CPU, fp32); 0: no cap."""
    if setting == "auto":
        return CPU_FP32_BATCH_TOKENS if device_type == "cpu" and precision == "fp32" else None
    return int(setting) or None
