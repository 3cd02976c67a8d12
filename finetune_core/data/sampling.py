"""Seeded, optionally stratified row samples that stay a few bytes a row at any data size."""

from __future__ import annotations

import numpy as np


def seeded_sample(labels: np.ndarray | None, rows: int, size: int, seed: int) -> np.ndarray:
    """``size`` of ``rows`` row positions (sorted), drawn without replacement and seeded; with
    ``labels`` (class ids) stratified: each class gets its share of ``size``, the remainders
    going to the largest fractions. Memory is a few bytes per row whatever the data's size
    (scikit-learn's stratified split needed ~110 bytes per row)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(rows, size=size, replace=False))
    counts = np.bincount(labels)
    quotas = size * counts / rows
    take = np.floor(quotas).astype(np.int64)
    for c in np.argsort(-(quotas - take), kind="stable")[: size - int(take.sum())]:
        take[c] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=int(n), replace=False) for c, n in enumerate(take) if n]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
