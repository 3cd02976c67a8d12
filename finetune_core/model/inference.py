"""Inference a batch at a time: raw model outputs in the original row order, for validation,
evaluation, selection and serving alike."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from finetune_core.batch_plan import scored_in_row_order
from finetune_core.model.batching import BatchLimit, Encoded, collate
from finetune_core.model.heads import forward_logits


@torch.inference_mode()
def predict_outputs(
    model, encoded: Encoded, batch_size: int | BatchLimit, device="cpu", autocast=None, spec=None
) -> np.ndarray:
    """Raw outputs (logits or values) in the original row order."""
    return outputs_in_row_order(
        model, spec, encoded.lengths, lambda rows: collate(encoded, rows), batch_size, device, autocast
    )


@torch.inference_mode()
def outputs_in_row_order(
    model, spec, lengths, make_batch: Callable, batch_size: int | BatchLimit, device="cpu", autocast=None
) -> np.ndarray:
    """Raw outputs of ``make_batch(rows)`` over length-sorted batches, back in the original row order
    (the encoded rows here, a layer cache's rows in training.cached_lower_blocks)."""
    was_training = model.training
    model.eval()

    def score(rows) -> np.ndarray:
        inputs = {k: v.to(device) for k, v in make_batch(rows).items()}
        with autocast() if autocast else contextlib.nullcontext():
            return forward_logits(model, spec, inputs).float().cpu().numpy()

    results = scored_in_row_order(lengths, batch_size, score)
    model.train(was_training)
    return results if results is not None else np.zeros((0, model.config.num_labels), dtype=np.float32)


@torch.inference_mode()
def head_outputs(model, head, features: torch.Tensor, batch_size: int) -> np.ndarray:
    """``head(model, features)`` a batch of rows at a time, so the head's activations stay a
    batch in size however many rows ``features`` has; an empty ``features`` still runs once
    for the output width.

    The last batch is the last ``batch_size`` rows, overlapping the one before, so every call
    has the same shape: a short remainder (one row takes the matrix-vector kernel) rounds
    differently from the batches before it and from one call on every row."""
    results, rows = None, len(features)
    for start in range(0, max(rows, 1), batch_size):
        start = max(min(start, rows - batch_size), 0)
        outputs = head(model, features[start : start + batch_size]).float().cpu().numpy()
        if results is None:
            results = np.empty((rows, *outputs.shape[1:]), dtype=outputs.dtype)
        results[start : start + len(outputs)] = outputs
    return results
