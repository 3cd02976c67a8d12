"""Per-class (classification) and per-label (multilabel) metrics: one loop for both tasks, named
by the prefixes the metric table gives each task (``precision_<label>`` ...), plus ``support_<label>``."""

from __future__ import annotations

import re

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from finetune_core.metric_table import PER_CLASS_PREFIXES, PER_LABEL_PREFIXES

_PREFIXES = {"classification": PER_CLASS_PREFIXES, "multilabel": PER_LABEL_PREFIXES}


def metric_safe(name: str) -> str:
    """Class names become part of metric names: keep to characters every tracker accepts."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def per_label_metrics(task: str, targets: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict[str, float]:
    """For each label in order, the task's per-label metrics and its support; ``targets`` and
    ``predicted``: class ids (classification) or 0/1 matrices (multilabel)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predicted, labels=range(len(labels)), zero_division=0
    )
    values = {"precision_": precision, "recall_": recall, "f1_": f1}
    metrics = {}
    for i, name in enumerate(labels):
        key = metric_safe(name)
        for prefix in _PREFIXES[task]:
            metrics[f"{prefix}{key}"] = float(values[prefix][i])
        metrics[f"support_{key}"] = float(support[i])
    return metrics
