"""Temperature scaling (Guo et al. 2017) fitted on validation logits, and expected calibration error."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, max_iter: int = 200, prior_sd: float | None = None
) -> float:
    """The T > 0 minimising validation NLL of softmax(logits / T); argmax is unchanged. ``prior_sd``: the
    most probable T under a normal prior on log T (mean 0, this standard deviation) instead, which on a
    few rows stays near 1 unless the rows say otherwise (the summed NLL against the prior)."""
    logits_t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    targets_t = torch.tensor(np.asarray(targets), dtype=torch.long)  # a copy: the input may be read-only
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits_t / log_t.exp(), targets_t)
        if prior_sd is not None:  # per row, so the prior weighs 1/n of the summed NLL
            loss = loss + log_t.square().sum() / (2 * prior_sd**2 * len(targets_t))
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    return temperature if np.isfinite(temperature) and 1e-2 < temperature < 1e2 else 1.0


def expected_calibration_error(
    logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0, bins: int = 15
) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    probabilities = np.exp(scaled)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    correct = predicted == np.asarray(targets)
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)
