"""Score served predictions (what the logged pyfunc model returns) against this run's test set,
so the new model and the champion are measured the same way, on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from finetune_core.data.multilabel import label_matrix
from finetune_core.metrics.calibration import expected_calibration_error
from finetune_core.metrics.multilabel import multilabel_metrics
from finetune_core.metrics.scores import classification_metrics, regression_metrics


def served_labels(frame: pd.DataFrame) -> list[str]:
    return [c[len("probability_") :] for c in frame.columns if c.startswith("probability_")]


def comparable(task: str, frame: pd.DataFrame, labels: list[str] | None) -> str | None:
    """None when ``frame`` can be scored against this run's labels, else why not."""
    if task == "regression":
        return None if "prediction" in frame else "the model returns no `prediction` column"
    if task == "multilabel" and "labels" not in frame:
        return "the model returns no `labels` column (not a multilabel model)"
    if task == "classification" and "label" not in frame:
        return "the model returns no `label` column (not a single-label classifier)"
    theirs = served_labels(frame)
    if sorted(theirs) != sorted(labels or []):
        return f"the model predicts classes {sorted(theirs)}, this run's data has {sorted(labels or [])}"
    return None


def probabilities(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    return frame[[f"probability_{name}" for name in labels]].to_numpy(dtype=np.float64)


def served_metrics(task: str, frame: pd.DataFrame, targets: np.ndarray, labels: list[str] | None) -> dict[str, float]:
    """Metrics of served predictions; ``targets`` are class ids (classification), label-id lists
    (multilabel) or values."""
    if task == "regression":
        return regression_metrics(targets, frame["prediction"].to_numpy(dtype=np.float64))
    if task == "multilabel":  # decisions as served (tuned thresholds applied), probabilities for ROC-AUC
        truth = label_matrix(targets, len(labels))
        return multilabel_metrics(truth, probabilities(frame, labels), predicted_ids(task, frame, labels), labels)
    probs = probabilities(frame, labels)
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    metrics = classification_metrics(np.asarray(targets, dtype=np.int64), log_probs, labels)
    metrics["ece"] = expected_calibration_error(log_probs, np.asarray(targets, dtype=np.int64))
    return metrics


def predicted_ids(task: str, frame: pd.DataFrame, labels: list[str] | None) -> np.ndarray:
    """Class ids (classification), a 0/1 matrix (multilabel) or values (regression) of served predictions."""
    if task == "regression":
        return frame["prediction"].to_numpy(dtype=np.float64)
    if task == "multilabel":
        index = {name: i for i, name in enumerate(labels)}
        return label_matrix([[index[name] for name in row] for row in frame["labels"]], len(labels))
    return probabilities(frame, labels).argmax(axis=1)
