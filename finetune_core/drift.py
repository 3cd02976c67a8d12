"""Data drift between two training sets: label distribution and text length distribution.

A profile (label shares, text-length histogram on fixed bins) is logged with every run, so a
retrain compares the new snapshot with the champion's training data without re-reading it.
Label drift is the total variation distance between label shares (0 = same, 1 = disjoint;
for regression, the shift of the target mean in reference standard deviations); length drift is the population stability index
(PSI) of the length histograms (rule of thumb: < 0.1 stable, > 0.25 shifted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from finetune_core.chunks import parquet_chunks
from finetune_core.data import LABEL, TEXT

LENGTH_BINS = [0, 16, 32, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, np.inf]


class DataProfile(BaseModel):
    rows: int
    labels: dict[str, float]  # share per class, or the target's mean and std (regression)
    lengths: list[float]  # share of texts per LENGTH_BINS bin (characters)


class DriftReport(BaseModel):
    label_distance: float
    length_psi: float
    max_label_distance: float
    max_length_psi: float

    @property
    def drifted(self) -> bool:
        return self.label_distance > self.max_label_distance or self.length_psi > self.max_length_psi

    def summary(self) -> str:
        return (f"label distribution distance {self.label_distance:.3f} (max {self.max_label_distance}), "
                f"text length PSI {self.length_psi:.3f} (max {self.max_length_psi})")


def profile(texts: pd.Series, labels: pd.Series, task: str) -> DataProfile:
    lengths = texts.fillna("").astype(str).str.len().to_numpy()
    length_shares = np.histogram(lengths, bins=LENGTH_BINS)[0] / max(len(lengths), 1)
    if task == "classification":
        shares = labels.map(str).value_counts(normalize=True)
        label_shares = {str(k): float(v) for k, v in shares.items()}
    else:
        values = pd.to_numeric(labels, errors="coerce").dropna().to_numpy()
        label_shares = {"mean": float(values.mean()), "std": float(values.std())} if len(values) else {}
    return DataProfile(rows=len(texts), labels=label_shares, lengths=[float(x) for x in length_shares])


def profile_parquet(path: str | Path, labels: list[str] | None, task: str, rows: int = 100_000,
                    text: str = TEXT, label: str = LABEL) -> DataProfile:
    """``profile`` of a prepared split (ids in ``label``; ``labels`` names them), read ``rows`` at a
    time so the texts are never all in memory: the same profile, to the last bit, as
    ``profile`` on the whole frame. ``text``/``label``: the columns (a raw file's own names)."""
    length_counts = np.zeros(len(LENGTH_BINS) - 1, dtype=np.int64)
    label_counts: dict[str, int] = {}  # in order of first appearance, as value_counts sees them
    targets: list[np.ndarray] = []
    total = 0
    for chunk in parquet_chunks(path, rows, [text, label])():
        chunk = chunk.rename(columns={text: TEXT, label: LABEL})
        total += len(chunk)
        length_counts += np.histogram(chunk[TEXT].fillna("").astype(str).str.len().to_numpy(), bins=LENGTH_BINS)[0]
        if task == "classification":
            names = chunk[LABEL].map(lambda i: labels[i]) if labels else chunk[LABEL]
            for name, count in names.map(str).value_counts(sort=False).items():
                label_counts[str(name)] = label_counts.get(str(name), 0) + int(count)
        else:
            # The targets themselves, not running sums: numpy's pairwise mean and std over the whole
            # column are what ``profile`` gives, and a sum built chunk by chunk differs in the last bits.
            # A float per row is the memory the label column costs anyway (tokenized.read_targets).
            targets.append(pd.to_numeric(chunk[LABEL], errors="coerce").dropna().to_numpy())
    if task == "classification":
        ordered = sorted(label_counts.items(), key=lambda item: -item[1])  # stable, as value_counts sorts
        shares = np.array([count for _, count in ordered], dtype=np.int64)
        shares = shares / shares.sum() if len(shares) else shares
        label_shares = {name: float(share) for (name, _), share in zip(ordered, shares)}
    else:
        values = np.concatenate(targets) if targets else np.array([], dtype=np.float64)
        label_shares = {"mean": float(values.mean()), "std": float(values.std())} if len(values) else {}
    length_shares = length_counts / max(total, 1)
    return DataProfile(rows=total, labels=label_shares, lengths=[float(x) for x in length_shares])


def _psi(expected: np.ndarray, actual: np.ndarray, floor: float = 1e-4) -> float:
    expected, actual = np.clip(expected, floor, None), np.clip(actual, floor, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def compare(reference: DataProfile, current: DataProfile, max_label_distance: float, max_length_psi: float) -> DriftReport:
    if set(reference.labels) == {"mean", "std"}:  # regression: standardised shift of the target mean
        distance = abs(current.labels["mean"] - reference.labels["mean"]) / (reference.labels["std"] or 1.0)
    else:
        keys = set(reference.labels) | set(current.labels)
        distance = 0.5 * sum(abs(reference.labels.get(k, 0.0) - current.labels.get(k, 0.0)) for k in keys)
    psi = _psi(np.asarray(reference.lengths), np.asarray(current.lengths))
    return DriftReport(label_distance=distance, length_psi=psi, max_label_distance=max_label_distance,
                       max_length_psi=max_length_psi)
