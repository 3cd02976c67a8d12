"""Label review: which training rows' labels are probably wrong, from out-of-fold predictions.

Every training row gets a prediction from a head that never saw it (k folds over the cached
frozen features, the frozen stage's linear head family and L2 objective), then confident
learning (Northcutt et al. 2021, cleanlab's ``filter_by="confident_learning"``) flags the rows
whose given label disagrees with the model's confident view: per-class thresholds are the mean
self-confidence of the rows given that class; a row counts in the confident joint's
off-diagonal when some other class clears its threshold (the likeliest such class), and is kept
only when the model's argmax is not its given label. Rows rank by label quality (self-confidence,
lowest first). Multilabel: the same per label, one-vs-rest. Regression has no classes: the rows
with the largest out-of-fold residuals, named as such. docs/concepts/label-review.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from finetune_core.data.copies import original_rows
from finetune_core.training.head_solver import lbfgs_optimizer, penalty_scale
from finetune_core.training.losses import compute_loss, targets_tensor

FOLDS = 5  # cleanlab's default for its own cross-validated probabilities
# Regression: a residual beyond this many robust standard deviations (1.4826 x MAD) is flagged.
RESIDUAL_SIGMAS = 3.0
_EPSILON = 1e-6  # cleanlab's floating-point margin on thresholds and the given-label tie-break


@dataclass
class LabelReview:
    """Flagged rows, most suspect first: positions in the train split, given and suggested
    labels (class ids; multilabel: lists of label ids; regression: targets), and their score."""

    method: str  # "confident learning" or "largest out-of-fold residuals"
    score_name: str  # what `score` means and which way is suspect
    rows: np.ndarray
    given: list
    suggested: list
    score: np.ndarray
    total: int
    notes: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return len(self.rows) / max(self.total, 1)

    def of_rows(self, positions: np.ndarray) -> LabelReview:
        """This review of the split's rows at ``positions`` (a subset: a sample, the originals of
        augmented data) with its rows as positions in the split."""
        return replace(self, rows=np.asarray(positions)[self.rows])


def fit_linear_head(
    features: torch.Tensor, targets: torch.Tensor, task: str, outputs: int, regularization: float
) -> torch.nn.Linear:
    """A linear head fitted full-batch by L-BFGS on the frozen stage's L2-regularised objective."""
    features = features.double()
    head = torch.nn.Linear(features.shape[1], outputs, dtype=torch.float64)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    scale = penalty_scale(features, regularization, task, outputs)
    optimizer = lbfgs_optimizer(list(head.parameters()), 200)

    def objective():
        optimizer.zero_grad(set_to_none=True)
        total = compute_loss(head(features), targets, task).double() + scale * head.weight.pow(2).sum()
        total.backward()
        return total

    optimizer.step(objective)
    return head


def fold_assignment(
    targets: np.ndarray, task: str, folds: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Each row's fold: stratified by class (classification), shuffled otherwise; rows sharing a
    ``groups`` id (a row and its augmented copies) in one fold."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    rows = np.arange(len(targets))
    grouped = groups is not None and len(np.unique(groups)) < len(groups)
    if task == "classification":
        method = StratifiedGroupKFold if grouped else StratifiedKFold
        splits = method(folds, shuffle=True, random_state=seed).split(rows, targets, groups if grouped else None)
    else:
        method = GroupKFold if grouped else KFold
        splits = method(folds, shuffle=True, random_state=seed).split(rows, groups=groups if grouped else None)
    assignment = np.empty(len(targets), dtype=np.int64)
    for fold, (_, held) in enumerate(splits):
        assignment[held] = fold
    return assignment


def usable_folds(targets: np.ndarray, task: str, folds: int = FOLDS) -> int:
    """Folds the rows allow (each class in every training part): 0 when fewer than 2."""
    if task == "classification":
        counts = np.bincount(np.asarray(targets, dtype=np.int64))
        folds = min(folds, int(counts[counts > 0].min())) if len(counts) else 0
    return folds if folds >= 2 and len(targets) >= folds else 0


def out_of_fold_outputs(
    features,
    targets: np.ndarray,
    task: str,
    *,
    outputs: int,
    folds: int = FOLDS,
    regularization: float = 1.0,
    seed=0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Raw head outputs (logits; regression: predictions) for every row, each from a head fitted on
    the other folds (``groups``: rows that go to one fold together, see ``fold_assignment``)."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = targets_tensor(targets, task)
    assignment = fold_assignment(np.asarray(targets), task, folds, seed, groups)
    result = np.zeros((len(x), outputs), dtype=np.float64)
    for fold in range(folds):
        held = torch.from_numpy(assignment == fold)
        head = fit_linear_head(x[~held], y[~held], task, outputs, regularization)
        with torch.no_grad():
            result[held.numpy()] = head(x[held]).numpy()
    return result


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def confident_learning(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flagged mask, suggested class, self-confidence) per row, as cleanlab's
    ``find_label_issues(filter_by="confident_learning")`` decides them."""
    labels = np.asarray(labels, dtype=np.int64)
    rows, classes = np.arange(len(labels)), probabilities.shape[1]
    thresholds = np.array(
        [probabilities[labels == k, k].mean() if (labels == k).any() else 2.0 for k in range(classes)]
    )
    confident = probabilities >= np.clip(thresholds, 2 * _EPSILON, None) - _EPSILON
    count = confident.sum(axis=1)
    guess = np.where(count > 1, probabilities.argmax(axis=1), confident.argmax(axis=1))
    off_diagonal = (count > 0) & (guess != labels)
    tie_broken = probabilities.copy()
    tie_broken[rows, labels] += _EPSILON
    flagged = off_diagonal & (tie_broken.argmax(axis=1) != labels)
    return flagged, guess, probabilities[rows, labels]


def review_classes(outputs: np.ndarray, targets: np.ndarray) -> LabelReview:
    flagged, guess, quality = confident_learning(targets, softmax(outputs))
    rows = np.flatnonzero(flagged)
    rows = rows[np.argsort(quality[rows], kind="stable")]
    return LabelReview(
        method="confident learning",
        score_name="label quality (out-of-fold probability of the given label; lowest is most suspect)",
        rows=rows,
        given=[int(targets[r]) for r in rows],
        suggested=[int(guess[r]) for r in rows],
        score=quality[rows],
        total=len(targets),
    )


def review_multilabel(outputs: np.ndarray, targets: np.ndarray) -> LabelReview:
    """Per label, one-vs-rest: a row is flagged when any of its labels is; its score is its
    lowest label quality, and the suggestion flips the flagged labels."""
    present = 1.0 / (1.0 + np.exp(-np.asarray(outputs, dtype=np.float64)))
    matrix = np.asarray(targets, dtype=np.int64)
    flipped = np.zeros_like(matrix, dtype=bool)
    quality = np.ones(matrix.shape, dtype=np.float64)
    for label in range(matrix.shape[1]):
        pairs = np.stack([1.0 - present[:, label], present[:, label]], axis=1)
        flipped[:, label], _, quality[:, label] = confident_learning(matrix[:, label], pairs)
    worst = np.where(flipped, quality, np.inf).min(axis=1)
    rows = np.flatnonzero(flipped.any(axis=1))
    rows = rows[np.argsort(worst[rows], kind="stable")]
    suggested = np.where(flipped, 1 - matrix, matrix)
    return LabelReview(
        method="confident learning, per label",
        score_name="label quality (lowest over the row's flagged labels; lowest is most suspect)",
        rows=rows,
        given=[np.flatnonzero(matrix[r]).tolist() for r in rows],
        suggested=[np.flatnonzero(suggested[r]).tolist() for r in rows],
        score=worst[rows],
        total=len(matrix),
    )


def review_residuals(predictions: np.ndarray, targets: np.ndarray) -> LabelReview:
    """Regression: rows whose out-of-fold residual exceeds RESIDUAL_SIGMAS robust deviations."""
    predicted = np.asarray(predictions, dtype=np.float64).reshape(len(targets))
    residual = np.asarray(targets, dtype=np.float64) - predicted
    spread = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    size = np.abs(residual) / max(spread, 1e-12)
    rows = np.flatnonzero(size > RESIDUAL_SIGMAS)
    rows = rows[np.argsort(-size[rows], kind="stable")]
    return LabelReview(
        method="largest out-of-fold residuals",
        score_name=f"|residual| in robust standard deviations (above {RESIDUAL_SIGMAS:g}; highest is most suspect)",
        rows=rows,
        given=[float(targets[r]) for r in rows],
        suggested=[float(predicted[r]) for r in rows],
        score=size[rows],
        total=len(targets),
    )


def review_margins(margins: np.ndarray, rival: np.ndarray, targets: np.ndarray) -> LabelReview:
    """The second reading, after stage 2 (finetune_core.training.margins): rows whose margin in their
    training batches, averaged over the epochs (the area under the margin), is below 0 — the model
    spent the training disagreeing with the label. Suggested: the rival class it was heard most."""
    heard = ~np.isnan(margins)
    area = np.where(heard.any(axis=0), np.nansum(margins, axis=0) / np.maximum(heard.sum(axis=0), 1), np.nan)
    rows = np.flatnonzero(area < 0)
    rows = rows[np.argsort(area[rows], kind="stable")]
    return LabelReview(
        method="area under the margin (stage-2 training)",
        score_name="the given label's logit less the largest other, averaged over stage-2 epochs (lowest is most "
        "suspect)",
        rows=rows,
        given=[int(targets[r]) for r in rows],
        suggested=[int(np.bincount(rival[heard[:, r], r]).argmax()) for r in rows],
        score=area[rows],
        total=int(heard.any(axis=0).sum()),
    )


def originals_by_margins(margins: np.ndarray, rival: np.ndarray, targets: np.ndarray, copies=None) -> LabelReview:
    """``review_margins`` of the original rows (``copies``: finetune_core.data.copies.Copies, None where
    augmentation added no rows): a copy's margins are heard in training, not reviewed again."""
    own = original_rows(copies, margins.shape[1])
    return review_margins(margins[:, own], rival[:, own], targets[own]).of_rows(np.flatnonzero(own))


def review_outputs(outputs: np.ndarray, targets: np.ndarray, task: str) -> LabelReview:
    """The review of out-of-fold ``outputs`` against the given ``targets``, by task."""
    if task == "classification":
        return review_classes(outputs, targets)
    if task == "multilabel":
        return review_multilabel(outputs, targets)
    return review_residuals(outputs, targets)
