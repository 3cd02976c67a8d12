"""The trivial baseline a model must beat on the test set: what a model that never reads the
text scores, knowing only the training labels.

- classification: always predict train's most frequent class (a tie: the lowest class id),
  scored with accuracy (the primary metric, which the gate compares) and macro-F1 (reported:
  on imbalanced data it shows what accuracy hides);
- regression: always predict train's mean target, scored with the regression metrics (the
  gate compares MSE);
- multilabel: always predict train's most frequent label alone, scored with the multilabel
  metrics (the gate compares macro-F1: a model that predicts nothing, as BCE at 0.5 often
  does on small data, scores 0 and fails it).

The baseline is computed from train, never from the test set: "predict the test majority"
would peek at the answers. Augmented copies do not count (``augmentation.balance`` adds them
to rare classes): the baseline knows the class shares of the data as it was given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel
from sklearn.metrics import accuracy_score, f1_score

from finetune_core.data.chunks import parquet_columns
from finetune_core.data.columns import AUGMENTED
from finetune_core.data.multilabel import label_matrix
from finetune_core.data.prepare import LABEL
from finetune_core.metrics.multilabel import multilabel_metrics
from finetune_core.metrics.scores import regression_metrics


class Baseline(BaseModel):
    name: str  # "majority-class" | "mean-prediction"
    predicts: str  # what it predicts, in words
    metrics: dict[str, float]


def majority_class_baseline(train_labels: np.ndarray, test_labels: np.ndarray, labels: list[str]) -> Baseline:
    """Train's most frequent class id predicted for every test row (ids index ``labels``)."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=len(labels))
    majority = int(counts.argmax())
    targets = np.asarray(test_labels, dtype=np.int64)
    predicted = np.full(len(targets), majority)
    share = counts[majority] / counts.sum()
    return Baseline(
        name="majority-class",
        predicts=f"always {labels[majority]!r}, the most frequent class in train ({share:.0%})",
        metrics={
            "accuracy": float(accuracy_score(targets, predicted)),
            "f1_macro": float(
                f1_score(targets, predicted, average="macro", labels=range(len(labels)), zero_division=0)
            ),
        },
    )


def mean_prediction_baseline(train_targets: np.ndarray, test_targets: np.ndarray) -> Baseline:
    """Train's mean target predicted for every test row."""
    mean = float(np.mean(np.asarray(train_targets, dtype=np.float64)))
    targets = np.asarray(test_targets, dtype=np.float64)
    return Baseline(
        name="mean-prediction",
        predicts=f"always {mean:.4g}, the mean train target",
        metrics=regression_metrics(targets, np.full(len(targets), mean)),
    )


def most_frequent_label_baseline(train_labels: np.ndarray, test_labels: np.ndarray, labels: list[str]) -> Baseline:
    """Train's most frequent label (a tie: the lowest id) as the whole label set of every test row."""
    counts = label_matrix(train_labels, len(labels)).sum(axis=0)
    top = int(counts.argmax())
    truth = label_matrix(test_labels, len(labels))
    predicted = np.zeros_like(truth)
    predicted[:, top] = 1.0
    metrics = multilabel_metrics(truth, predicted, predicted, labels)
    return Baseline(
        name="most-frequent-label",
        predicts=f"always [{labels[top]!r}], the most frequent label in train "
        f"({counts[top] / len(train_labels):.0%} of rows)",
        metrics={k: metrics[k] for k in ("f1_macro", "f1_micro", "subset_accuracy")},
    )


def trivial_baseline(
    task: str, train_labels: np.ndarray, test_labels: np.ndarray, labels: list[str] | None = None
) -> Baseline:
    """The baseline of ``task``: labels are class ids (classification) or targets (regression)."""
    if task == "classification":
        return majority_class_baseline(train_labels, test_labels, labels or [])
    if task == "multilabel":
        return most_frequent_label_baseline(train_labels, test_labels, labels or [])
    return mean_prediction_baseline(train_labels, test_labels)


def original_train_labels(path: str | Path) -> np.ndarray:
    """A prepared train split's labels (class ids or targets), augmented copies left out."""
    import pyarrow.parquet as pq

    columns = [LABEL] + ([AUGMENTED] if AUGMENTED in parquet_columns(path) else [])
    table = pq.read_table(path, columns=columns)
    labels = table.column(LABEL).to_numpy()
    if AUGMENTED in columns:
        labels = labels[~table.column(AUGMENTED).to_numpy(zero_copy_only=False).astype(bool)]
    return labels
