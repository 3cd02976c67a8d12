"""Reviewer files of a multilabel model: the per-label report, the label co-occurrence /
confusion view, and the worst-predicted test rows.

The co-occurrence view is the multilabel stand-in for a confusion matrix: cell (true i,
predicted j) counts the test rows that have label i and were given label j. The diagonal is
each label's true positives; off the diagonal, the labels the model adds or substitutes
(``grain`` rows also tagged ``wheat``). It is written as a CSV over every label and drawn for
the ``PLOTTED_LABELS`` most frequent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

PLOTTED_LABELS = 30


def per_label_report(truth: np.ndarray, predicted: np.ndarray, labels: list[str], thresholds=None) -> str:
    """Precision, recall, F1, support and decision threshold per label, most frequent first."""
    precision, recall, f1, support = precision_recall_fscore_support(
        truth > 0.5, predicted > 0.5, labels=range(len(labels)), zero_division=0
    )
    frame = pd.DataFrame(
        {
            "label": labels,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "predicted": (predicted > 0.5).sum(axis=0),
            "threshold": thresholds if thresholds is not None else [0.5] * len(labels),
        }
    ).sort_values(["support", "label"], ascending=[False, True])
    return frame.to_string(index=False, float_format=lambda x: f"{x:.4f}") + "\n"


def cooccurrence(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """Rows with true label i (index) and predicted label j (column)."""
    matrix = (truth > 0.5).astype(np.int64).T @ (predicted > 0.5).astype(np.int64)
    return pd.DataFrame(matrix, index=pd.Index(labels, name="true"), columns=labels)


def cooccurrence_plot(matrix: pd.DataFrame, support: np.ndarray, path: Path, pyplot) -> Path:
    order = np.argsort(-support, kind="stable")[:PLOTTED_LABELS]  # the most frequent true labels
    shown = matrix.iloc[order, order]
    size = max(4.0, 0.35 * len(shown) + 2)
    figure, axis = pyplot.subplots(figsize=(size, size))
    axis.imshow(np.log1p(shown.to_numpy()), cmap="Blues")
    axis.set_xticks(range(len(shown)), shown.columns, rotation=90, fontsize=7)
    axis.set_yticks(range(len(shown)), shown.index, fontsize=7)
    axis.set_xlabel("predicted label")
    axis.set_ylabel("true label")
    axis.set_title(f"label co-occurrence, true x predicted (test; top {len(shown)} labels, log scale)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def worst_rows(texts, truth: np.ndarray, predicted: np.ndarray, probs: np.ndarray, labels, count: int = 50):
    """The test rows with the lowest F1 of their predicted label set (ties: most labels missed)."""
    t, p = truth > 0.5, predicted > 0.5
    overlap, sizes = (t & p).sum(axis=1), t.sum(axis=1) + p.sum(axis=1)
    row_f1 = np.where(sizes == 0, 1.0, 2 * overlap / np.maximum(sizes, 1))
    frame = pd.DataFrame(
        {
            "text": texts,
            "true_labels": ["|".join(labels[j] for j in np.flatnonzero(row)) for row in t],
            "predicted_labels": ["|".join(labels[j] for j in np.flatnonzero(row)) for row in p],
            "row_f1": row_f1,
            "missed": (t & ~p).sum(axis=1),
            "lowest_probability_of_a_true_label": np.where(t, probs, np.inf).min(axis=1),
        }
    )
    return frame.sort_values(["row_f1", "missed"], ascending=[True, False]).head(count)


def write_multilabel_review(out_dir: Path, texts, truth, predicted, probs, labels, pyplot, thresholds=None) -> dict:
    files = {"per_label_report": out_dir / "per_label_report.txt"}
    files["per_label_report"].write_text(per_label_report(truth, predicted, labels, thresholds), encoding="utf-8")
    matrix = cooccurrence(truth, predicted, labels)
    files["label_cooccurrence"] = out_dir / "label_cooccurrence.csv"
    matrix.to_csv(files["label_cooccurrence"])
    files["label_cooccurrence_plot"] = cooccurrence_plot(
        matrix, truth.sum(axis=0), out_dir / "label_cooccurrence.png", pyplot
    )
    files["worst_examples"] = out_dir / "worst_test_examples.csv"
    worst_rows(texts, truth, predicted, probs, labels).to_csv(files["worst_examples"], index=False)
    return files
