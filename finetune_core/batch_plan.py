"""Inference batches by length, with NumPy only: the PyTorch paths (finetune_core.model.batching)
and the ONNX Runtime predictor, which serves without torch, cut batches the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchLimit:
    """How large one inference batch may be: ``rows``, and at most ``tokens`` padded tokens (None:
    no cap; a row longer than the cap still forms a batch on its own)."""

    rows: int
    tokens: int | None = None


def sorted_batches(lengths: np.ndarray, limit: int | BatchLimit) -> list[np.ndarray]:
    """Row indexes, longest first, cut into batches of at most ``limit`` rows (an int) or within a
    ``BatchLimit``: each batch pads to its first (longest) row, so its cost is rows x that length."""
    limit = limit if isinstance(limit, BatchLimit) else BatchLimit(limit)
    order = np.argsort(-np.asarray(lengths), kind="stable")
    if limit.tokens is None:
        return [order[i : i + limit.rows] for i in range(0, len(order), limit.rows)]
    batches, start = [], 0
    while start < len(order):
        width = max(int(lengths[order[start]]), 1)
        size = min(limit.rows, max(limit.tokens // width, 1))
        batches.append(order[start : start + size])
        start += size
    return batches


def scored_in_row_order(lengths: np.ndarray, limit: int | BatchLimit, score: Callable) -> np.ndarray | None:
    """``score(rows)`` (an array, a row each) over ``sorted_batches``, put back in the original row
    order; None when there are no rows (the caller knows the width an empty result has)."""
    results = None  # one array, allocated once the first batch shows the output width
    for rows in sorted_batches(lengths, limit):
        outputs = score(rows)
        if results is None:
            results = np.empty((len(lengths), *outputs.shape[1:]), dtype=outputs.dtype)
        results[np.asarray(rows)] = outputs
    return results
