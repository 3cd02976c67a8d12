"""Metrics by task type, computed from model outputs (logits or standardised predictions)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)

from finetune_core.metrics.multilabel import outputs_metrics
from finetune_core.metrics.per_label import per_label_metrics


def classification_metrics(targets: np.ndarray, logits: np.ndarray, labels: list[str]) -> dict[str, float]:
    predicted = logits.argmax(axis=-1)
    log_probs = log_softmax(logits.astype(np.float64), axis=-1)
    metrics = {
        "accuracy": float(accuracy_score(targets, predicted)),
        "f1_macro": float(f1_score(targets, predicted, average="macro", labels=range(len(labels)), zero_division=0)),
        "loss": float(-log_probs[np.arange(len(targets)), targets].mean()),
    }
    return metrics | per_label_metrics("classification", targets, predicted, labels)


def regression_metrics(targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    targets = np.asarray(targets, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    constant = np.ptp(targets) == 0 or np.ptp(predictions) == 0
    return {
        "mse": float(mean_squared_error(targets, predictions)),
        "mae": float(mean_absolute_error(targets, predictions)),
        "r2": float(r2_score(targets, predictions)) if len(targets) > 1 else float("nan"),
        # Correlations are undefined for a constant series; report 0 rather than NaN (no information).
        "pearson": 0.0 if constant else float(pearsonr(targets, predictions).statistic),
        "spearman": 0.0 if constant else float(spearmanr(targets, predictions).statistic),
    }


def score_outputs(task: str, outputs: np.ndarray, targets: np.ndarray, labels=None, mean=0.0, std=1.0) -> dict:
    """Metrics for raw model outputs: logits (classification, multilabel) or standardised values
    (regression). Multilabel ``targets`` are the multi-hot matrix; thresholds are tuned on these rows."""
    if task == "classification":
        return classification_metrics(np.asarray(targets, dtype=np.int64), outputs, labels)
    if task == "multilabel":
        return outputs_metrics(outputs, np.asarray(targets), labels)
    return regression_metrics(targets, outputs.reshape(-1) * std + mean)
