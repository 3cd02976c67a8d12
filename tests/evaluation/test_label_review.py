"""Label review's method on synthetic feature matrices: planted flips are found, a clean set flags
(almost) nothing, the decisions match cleanlab's confident learning on the same probabilities,
and multilabel and regression take their own routes."""

import numpy as np
import pytest

from finetune_core.evaluation.label_review import (
    confident_learning,
    out_of_fold_outputs,
    review_outputs,
    softmax,
    usable_folds,
)


def separable(rows: int, classes: int, seed: int, width: int = 16, spread: float = 3.0):
    """(features, labels): well-separated class clusters (what a frozen backbone gives easy data)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % classes
    centres = rng.normal(size=(classes, width)) * spread
    return centres[labels] + rng.normal(size=(rows, width)), labels


def flip(labels: np.ndarray, share: float, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(labels), size=int(share * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[rows] = (labels[rows] + rng.integers(1, classes, size=len(rows))) % classes
    return noisy, np.sort(rows)


def test_planted_flips_are_found_and_ranked_first():
    features, labels = separable(300, 3, seed=0)
    noisy, planted = flip(labels, 0.05, 3, seed=1)
    outputs = out_of_fold_outputs(features, noisy, "classification", outputs=3, seed=0)
    review = review_outputs(outputs, noisy, "classification")
    found = set(review.rows.tolist())
    assert set(planted.tolist()) <= found and len(found - set(planted.tolist())) <= 2
    assert review.method == "confident learning"
    first = review.rows[0]
    assert review.suggested[0] == labels[first] and review.given[0] == noisy[first]
    assert np.all(np.diff(review.score) >= 0)  # lowest label quality first


def test_a_clean_dataset_flags_almost_nothing():
    features, labels = separable(300, 2, seed=3)
    outputs = out_of_fold_outputs(features, labels, "classification", outputs=2, seed=0)
    assert review_outputs(outputs, labels, "classification").fraction <= 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_same_decisions_as_cleanlab(seed):
    from cleanlab.filter import find_label_issues

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=400)
    probabilities = softmax(rng.normal(size=(400, 4)) * 2 + np.eye(4)[labels] * 1.5)
    ours, _, _ = confident_learning(labels, probabilities)
    theirs = find_label_issues(labels, probabilities, filter_by="confident_learning")
    assert ours.sum() > 20
    assert np.array_equal(ours, theirs)


def test_multilabel_flags_per_label():
    features, classes = separable(240, 4, seed=5, spread=6.0)
    matrix = np.stack([classes % 2, classes // 2], axis=1)  # two independent labels
    noisy = matrix.copy()
    noisy[[3, 50], 1] = 1 - noisy[[3, 50], 1]
    outputs = out_of_fold_outputs(features, noisy.astype(np.float32), "multilabel", outputs=2, regularization=10.0)
    review = review_outputs(outputs, noisy, "multilabel")
    assert {3, 50} <= set(review.rows.tolist()) and len(review.rows) <= 4
    at = review.rows.tolist().index(3)
    assert review.suggested[at] == np.flatnonzero(matrix[3]).tolist()


def test_regression_names_the_largest_residuals():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(200, 8))
    targets = features @ rng.normal(size=8) + rng.normal(scale=0.1, size=200)
    targets[[10, 120]] += 25.0
    outputs = out_of_fold_outputs(features, targets, "regression", outputs=1, seed=0)
    review = review_outputs(outputs, targets, "regression")
    assert review.method == "largest out-of-fold residuals"
    assert set(review.rows[:2].tolist()) == {10, 120}


def test_folds_follow_the_smallest_class():
    assert usable_folds(np.array([0] * 8 + [1] * 3), "classification") == 3
    assert usable_folds(np.array([0] * 8 + [1]), "classification") == 0
    assert usable_folds(np.zeros(30), "regression") == 5
