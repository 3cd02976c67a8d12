"""Loss follows the task type; the class and label weights it takes; targets as tensors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def compute_loss(
    outputs: torch.Tensor, targets: torch.Tensor, task: str, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Loss follows the task type: cross-entropy for classes (``weights``: one per class, from
    ``training.class_weights``), binary cross-entropy per label for multilabel (``weights``: the
    positive weight of each label, ``training.pos_weight``), mean squared error for targets."""
    outputs = outputs.float()
    if task == "classification":
        return F.cross_entropy(outputs, targets, weight=None if weights is None else weights.to(outputs.device))
    if task == "multilabel":
        pos_weight = None if weights is None else weights.to(outputs.device)
        return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype), pos_weight=pos_weight)
    return F.mse_loss(outputs.squeeze(-1), targets.to(outputs.dtype))


def class_weight_vector(setting, labels: list[str], train_labels: np.ndarray) -> torch.Tensor | None:
    """Cross-entropy weights from ``training.class_weights``: None for "none"; "balanced" is
    scikit-learn's n_samples / (n_classes * count_c) over the train split's class ids (a class
    absent from train gets 1); a mapping gives its labels' weights, the others 1."""
    if setting == "none":
        return None
    if setting == "balanced":
        counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=len(labels)).astype(np.float64)
        present = counts > 0
        weights = np.ones(len(labels))
        weights[present] = counts.sum() / (present.sum() * counts[present])
    else:
        weights = np.array([float(setting.get(name, 1.0)) for name in labels])
    return torch.tensor(weights, dtype=torch.float32)


def targets_tensor(targets: np.ndarray, task: str) -> torch.Tensor:
    return torch.tensor(np.array(targets), dtype=torch.long if task == "classification" else torch.float32)
