"""The out-of-fold temperature of a run too small to hold out validation rows: fitted only when the
out-of-fold predictions beat the majority class (a binomial test), else kept at 1."""

from __future__ import annotations

import numpy as np

from finetune_core.training.calibration_step import beats_majority


def _logits(predicted: np.ndarray, scale: float = 3.0) -> np.ndarray:
    return np.eye(2)[predicted] * scale


def test_predictions_right_on_most_rows_beat_the_majority_class():
    targets = np.array([0] * 8 + [1] * 8)
    assert beats_majority(_logits(targets), targets)


def test_nine_right_of_sixteen_do_not():
    targets = np.array([0] * 8 + [1] * 8)
    predicted = targets.copy()
    predicted[9:] = 1 - predicted[9:]
    assert not beats_majority(_logits(predicted), targets)


def test_always_the_majority_class_does_not_beat_it():
    targets = np.array([0] * 12 + [1] * 4)
    assert not beats_majority(_logits(np.zeros(16, dtype=int)), targets)


def test_one_class_or_no_rows_never_fit_a_temperature():
    assert not beats_majority(_logits(np.zeros(5, dtype=int)), np.zeros(5, dtype=int))
    assert not beats_majority(np.zeros((0, 2)), np.zeros(0, dtype=int))
