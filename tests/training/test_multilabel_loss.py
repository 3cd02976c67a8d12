"""Multilabel training: binary cross-entropy with positive weights, targets as a multi-hot matrix."""

import numpy as np
import torch

from finetune_core.data.multilabel import label_matrix
from finetune_core.training.losses import compute_loss, targets_tensor


def test_bce_with_pos_weight_matches_its_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0]])
    targets = targets_tensor(label_matrix(np.array([[0], [1, 2]], dtype=object), 3), "multilabel")
    assert targets.dtype == torch.float32 and targets.tolist() == [[1, 0, 0], [0, 1, 1]]
    weights = torch.tensor([1.0, 3.0, 0.5])
    p = torch.sigmoid(logits)
    expected = -(weights * targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
    assert torch.isclose(compute_loss(logits, targets, "multilabel", weights), expected, atol=1e-6)
    plain = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
    assert torch.isclose(compute_loss(logits, targets, "multilabel"), plain, atol=1e-6)
