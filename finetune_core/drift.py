"""Data drift between two training sets: label distribution and text length distribution.

A profile (label shares, text-length histogram on fixed bins) is logged with every run, so a
retrain compares the new snapshot with the champion's training data without re-reading it.
Label drift is the total variation distance between label shares (0 = same, 1 = disjoint;
for regression, the shift of the target mean in reference standard deviations); length drift is the population stability index
(PSI) of the length histograms (rule of thumb: < 0.1 stable, > 0.25 shifted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

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
