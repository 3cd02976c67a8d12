"""Tokenise once, then batch with dynamic padding.

Training batches are grouped by length (shuffled megabatches sorted by length, as in
HF's LengthGroupedSampler) so little compute goes to padding; evaluation batches are
sorted by length and results are put back in the original order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MEGABATCH_FACTOR = 50


@dataclass
class Encoded:
    input_ids: list[list[int]]
    pad_id: int

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer, texts: list[str], max_length: int) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return Encoded(input_ids=ids, pad_id=tokenizer.pad_token_id or 0)


def collate(encoded: Encoded, indices) -> dict[str, torch.Tensor]:
    rows = [encoded.input_ids[i] for i in indices]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), encoded.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[r, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


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


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
