"""Data drift between two training sets: label distribution and text length distribution.

A profile (label shares, text-length histogram on fixed bins) is logged with every run, so a
retrain compares the new snapshot with the champion's training data without re-reading it.
Label drift is the total variation distance between label shares (0 = same, 1 = disjoint;
for regression, the shift of the target mean in reference standard deviations); length drift is
the population stability index (PSI) of the length histograms (rule of thumb: < 0.1 stable, > 0.25 shifted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from finetune_core.data.chunks import parquet_chunks, parquet_columns
from finetune_core.data.columns import LABEL, TEXTS
from finetune_core.data.multilabel import parsed_labels

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
        return (
            f"label distribution distance {self.label_distance:.3f} (max {self.max_label_distance}), "
            f"text length PSI {self.length_psi:.3f} (max {self.max_length_psi})"
        )


class _ProfileCounts:
    """Counts a profile is made of, added up chunk by chunk: a chunked split's profile is the
    same, to the last bit, as the whole split's."""

    def __init__(self, task: str, separator: str | None = None):
        self.task, self.rows, self.separator = task, 0, separator
        self.lengths = np.zeros(len(LENGTH_BINS) - 1, dtype=np.int64)
        self.labels: dict[str, int] = {}  # in order of first appearance, as value_counts sees them
        self.targets: list[np.ndarray] = []

    def add(self, texts: pd.Series, labels: pd.Series) -> None:
        self.rows += len(texts)
        self.lengths += np.histogram(texts.fillna("").astype(str).str.len().to_numpy(), bins=LENGTH_BINS)[0]
        if self.task == "multilabel":  # each label of each row counts once: shares of label assignments
            parsed = parsed_labels(labels, self.separator)  # a raw file's lists, text or delimited strings
            labels = parsed.map(lambda names: names if isinstance(names, list) else []).explode().dropna()
        if self.task in ("classification", "multilabel"):
            for name, count in labels.map(str).value_counts(sort=False).items():
                self.labels[str(name)] = self.labels.get(str(name), 0) + int(count)
        else:
            # The targets themselves, not running sums: numpy's pairwise mean and std over the whole
            # column differ in the last bits from a sum built chunk by chunk. A float per row is the
            # memory the label column costs anyway (data.read_labels).
            self.targets.append(pd.to_numeric(labels, errors="coerce").dropna().to_numpy())

    def profile(self) -> DataProfile:
        if self.task in ("classification", "multilabel"):
            ordered = sorted(self.labels.items(), key=lambda item: -item[1])  # stable, as value_counts sorts
            counts = np.array([count for _, count in ordered], dtype=np.int64)
            shares = counts / counts.sum() if len(counts) else counts
            label_shares = {name: float(share) for (name, _), share in zip(ordered, shares)}
        else:
            values = np.concatenate(self.targets) if self.targets else np.array([], dtype=np.float64)
            label_shares = {"mean": float(values.mean()), "std": float(values.std())} if len(values) else {}
        length_shares = self.lengths / max(self.rows, 1)
        return DataProfile(rows=self.rows, labels=label_shares, lengths=[float(x) for x in length_shares])


def profile(texts: pd.Series, labels: pd.Series, task: str) -> DataProfile:
    counts = _ProfileCounts(task)
    counts.add(texts, labels)
    return counts.profile()


def profile_parquet(
    path: str | Path,
    labels: list[str] | None,
    task: str,
    rows: int = 100_000,
    texts: list[str] | None = None,
    label: str = LABEL,
    separator: str | None = None,
) -> DataProfile:
    """``profile`` of a prepared split (ids in ``label``; ``labels`` names them), read ``rows`` at a
    time so the texts are never all in memory. ``texts``/``label``: the columns (a raw file's own
    names, ``text_columns``' sources; None: a prepared split's own text columns). A sentence pair's
    length is the length of both texts together."""
    if texts is None:
        texts = [c for c in TEXTS if c in parquet_columns(path)]
    counts = _ProfileCounts(task, separator)
    for chunk in parquet_chunks(path, rows, [*texts, label])():
        joined = chunk[texts[0]].fillna("").astype(str)
        for column in texts[1:]:
            joined = joined + chunk[column].fillna("").astype(str)
        if labels and task == "multilabel":
            counts.add(joined, chunk[label].map(lambda ids: [labels[i] for i in ids]))
        else:
            counts.add(joined, chunk[label].map(lambda i: labels[i]) if labels else chunk[label])
    return counts.profile()


def _psi(expected: np.ndarray, actual: np.ndarray, floor: float = 1e-4) -> float:
    expected, actual = np.clip(expected, floor, None), np.clip(actual, floor, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def compare(
    reference: DataProfile, current: DataProfile, max_label_distance: float, max_length_psi: float
) -> DriftReport:
    if set(reference.labels) == {"mean", "std"}:  # regression: standardised shift of the target mean
        distance = abs(current.labels["mean"] - reference.labels["mean"]) / (reference.labels["std"] or 1.0)
    else:
        keys = set(reference.labels) | set(current.labels)
        distance = 0.5 * sum(abs(reference.labels.get(k, 0.0) - current.labels.get(k, 0.0)) for k in keys)
    psi = _psi(np.asarray(reference.lengths), np.asarray(current.lengths))
    return DriftReport(
        label_distance=distance, length_psi=psi, max_label_distance=max_label_distance, max_length_psi=max_length_psi
    )
