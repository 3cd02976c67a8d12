"""Multilabel math: sigmoid probabilities, one decision threshold per label tuned on validation,
per-label temperature scaling, and the metrics (micro/macro F1, subset accuracy, macro ROC-AUC,
per-label precision/recall/F1/support).

A label is predicted when its probability is at least its threshold. 0.5 for every label is
the usual default and a poor one on small, imbalanced data: a rare label's probabilities rarely
pass 0.5, so it is never predicted and its F1 is 0. ``tune_thresholds`` picks, per label with
at least 3 positive validation rows, the cut between two neighbouring validation probabilities
that maximises that label's F1 there, which on the tuning rows is never worse than 0.5 (0.5 is
one of the cuts it compares); rarer labels share one cut tuned on all labels' rows pooled.

Macro averages run over the labels that occur in the scored rows or are predicted there: a
label absent from both has no F1 to average (scikit-learn would count it as 0 and the score
would depend on how many unused labels train happened to have).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from finetune_core.data.prepare import MIN_VALIDATION_ROWS_PER_CLASS
from finetune_core.metrics.per_label import per_label_metrics

DEFAULT_THRESHOLD = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))  # no overflow at large |logits|


def best_threshold(probabilities: np.ndarray, positives: np.ndarray) -> float | None:
    """The F1-maximising threshold of one label (predict ``p >= t``), halfway between the last
    probability predicted positive and the next; None (keep the default) when the label has no
    positive row or the probabilities do not rank the rows at all (all equal: a model that never
    saw the label). Predicting every row is never chosen while some row is negative: any F1 above 0
    would prefer it over predicting nothing, though it says nothing about the label."""
    total = int(positives.sum())
    if total == 0 or np.ptp(probabilities) == 0:
        return None
    order = np.argsort(-probabilities, kind="stable")
    ranked, hits = probabilities[order], positives[order].astype(np.float64)
    true_positives = np.cumsum(hits)
    predicted = np.arange(1, len(ranked) + 1)
    f1 = 2 * true_positives / (predicted + total)
    cut_here = np.append(ranked[:-1] > ranked[1:], total == len(ranked))  # equal probabilities cut together
    f1[~cut_here] = -1.0
    best = int(np.argmax(f1))
    if f1[best] <= 0:  # no cut finds a positive
        return None
    if best == len(ranked) - 1:
        return float(ranked[best])
    return float((ranked[best] + ranked[best + 1]) / 2)


# A label needs this many positive validation rows for a cut of its own; below it, the cut would
# sit next to one or two rows' probabilities (with ``pos_weight: balanced`` a rare label's are
# inflated) and fire on many test rows. Those labels share one cut pooled over every label's rows
# (the micro-F1 optimum). The same rule as a class's validation rows (data.prepare).
MIN_POSITIVES_FOR_OWN_THRESHOLD = MIN_VALIDATION_ROWS_PER_CLASS


def tune_thresholds(
    probabilities: np.ndarray, targets: np.ndarray, trained: np.ndarray | None = None
) -> tuple[np.ndarray, list[int], list[int]]:
    """(one threshold per label, the labels left at 0.5, the labels given the pooled cut).

    A label with at least ``MIN_POSITIVES_FOR_OWN_THRESHOLD`` positive rows gets its own
    F1-maximising cut; one with fewer gets the cut that maximises F1 over all trained labels'
    rows pooled. ``trained``: per label, whether train had a positive row of it; a label it never
    showed keeps 0.5 (the model learnt nothing of it: its probabilities rank rows at random)."""
    labels = probabilities.shape[1]
    trained = np.ones(labels, dtype=bool) if trained is None else np.asarray(trained, dtype=bool)
    positives = targets > 0.5
    thresholds = np.full(labels, DEFAULT_THRESHOLD)
    untuned, pooled = [j for j in range(labels) if not trained[j]], []
    for label in np.flatnonzero(trained):
        own = None
        if positives[:, label].sum() >= MIN_POSITIVES_FOR_OWN_THRESHOLD:
            own = best_threshold(probabilities[:, label], positives[:, label])
        if own is None:
            pooled.append(int(label))
        else:
            thresholds[label] = own
    if pooled:
        columns = np.flatnonzero(trained)
        cut = best_threshold(probabilities[:, columns].ravel(), positives[:, columns].ravel())
        if cut is None:  # no positive row anywhere, or nothing ranked: nothing to pool from
            untuned, pooled = sorted(untuned + pooled), []
        else:
            thresholds[pooled] = cut
    return thresholds, untuned, pooled


def fit_label_temperatures(logits: np.ndarray, targets: np.ndarray, max_iter: int = 200) -> tuple[np.ndarray, list]:
    """Temperature scaling per label (sigmoid(logit / T_j), T_j minimising the validation BCE of
    label j). Only labels with positive and negative validation rows are fitted; the others keep
    T = 1: (temperatures, indexes of the labels skipped)."""
    import torch
    import torch.nn.functional as F

    logits_t = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    targets_t = torch.as_tensor(np.asarray(targets, dtype=np.float64))
    positives = targets_t.sum(dim=0)
    fitted = (positives > 0) & (positives < len(targets_t))
    temperatures = np.ones(logits_t.shape[1])
    if not bool(fitted.any()):
        return temperatures, list(range(logits_t.shape[1]))
    log_t = torch.zeros(int(fitted.sum()), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logits_t[:, fitted] / log_t.exp(), targets_t[:, fitted])
        loss.backward()
        return loss

    optimizer.step(closure)
    values = log_t.detach().exp().numpy()
    values = np.where(np.isfinite(values) & (values > 1e-2) & (values < 1e2), values, 1.0)
    temperatures[fitted.numpy()] = values
    return temperatures, [int(i) for i in np.flatnonzero(~fitted.numpy())]


def bce(probabilities: np.ndarray, targets: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())


def scored_labels(targets: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Labels that occur in the rows or are predicted there: the ones macro averages run over."""
    return np.flatnonzero((targets.sum(axis=0) > 0) | (predicted.sum(axis=0) > 0))


def macro_roc_auc(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean ROC-AUC over labels with positive and negative rows (NaN when there are none)."""
    both = [j for j in range(targets.shape[1]) if 0 < targets[:, j].sum() < len(targets)]
    if not both:
        return float("nan")
    return float(np.mean([roc_auc_score(targets[:, j], probabilities[:, j]) for j in both]))


def multilabel_metrics(
    targets: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray, labels: list[str]
) -> dict[str, float]:
    """Every multilabel metric of ``predicted`` (0/1 per row and label) against ``targets``."""
    targets, predicted = (np.asarray(a) > 0.5 for a in (targets, predicted))
    scored = scored_labels(targets, predicted)
    metrics = {
        "f1_macro": float(f1_score(targets, predicted, average="macro", labels=scored, zero_division=0))
        if len(scored)
        else 0.0,
        "f1_micro": float(f1_score(targets, predicted, average="micro", zero_division=0)),
        "subset_accuracy": float((targets == predicted).all(axis=1).mean()),
        "roc_auc_macro": macro_roc_auc(targets, probabilities),
        "loss": bce(probabilities, targets.astype(np.float64)),
    }
    return metrics | per_label_metrics("multilabel", targets, predicted, labels)


def outputs_metrics(logits: np.ndarray, targets: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Metrics of raw validation logits with thresholds tuned on those same rows (what an epoch
    would serve after tuning), plus ``f1_macro_at_0.5``, the untuned baseline."""
    probabilities = sigmoid(logits)
    thresholds, _, _ = tune_thresholds(probabilities, targets)
    metrics = multilabel_metrics(targets, probabilities, probabilities >= thresholds, labels)
    at_half = multilabel_metrics(targets, probabilities, probabilities >= DEFAULT_THRESHOLD, labels)
    metrics["f1_macro_at_0.5"] = at_half["f1_macro"]
    return metrics


def fit_decision_rule(
    logits: np.ndarray, targets: np.ndarray, labels: list[str], calibrate: bool, trained: np.ndarray | None = None
) -> dict:
    """What the served model applies, fitted on validation: per-label temperatures (when
    ``calibrate``) and per-label thresholds tuned on the calibrated probabilities (``trained``: which
    labels train had, see ``tune_thresholds``). Returns
    ``temperatures`` (None: not calibrated), ``thresholds``, ``notes`` (what was skipped and why)
    and ``summary`` (numbers to log: validation macro-F1 at 0.5 and tuned, BCE before/after)."""
    targets = np.asarray(targets, dtype=np.float64)
    notes, temperatures = [], None
    before = sigmoid(logits)
    if calibrate:
        temperatures, skipped = fit_label_temperatures(logits, targets)
        if skipped:
            names = [labels[i] for i in skipped]
            notes.append(
                f"calibration skipped for {len(names)} label(s) without both positive and negative validation rows "
                f"(temperature 1): {', '.join(names[:20])}{' …' if len(names) > 20 else ''}"
            )
    else:
        notes.append("calibration skipped: training.calibrate is false")
    probabilities = sigmoid(logits / (temperatures if temperatures is not None else 1.0))
    thresholds, untuned, pooled = tune_thresholds(probabilities, targets, trained)
    if pooled:
        notes.append(
            f"one pooled threshold {thresholds[pooled[0]]:.4f} for {len(pooled)} label(s) with fewer than "
            f"{MIN_POSITIVES_FOR_OWN_THRESHOLD} positive validation rows: {_listed(labels, pooled)}"
        )
    if untuned:
        notes.append(
            f"threshold 0.5 kept for {len(untuned)} label(s) with nothing to tune on: " + _listed(labels, untuned)
        )
    at_half = multilabel_metrics(targets, probabilities, probabilities >= DEFAULT_THRESHOLD, labels)
    tuned = multilabel_metrics(targets, probabilities, probabilities >= thresholds, labels)
    summary = {
        "val_f1_macro_at_0.5": at_half["f1_macro"],
        "val_f1_macro_tuned": tuned["f1_macro"],
        "val_f1_micro_tuned": tuned["f1_micro"],
        "val_loss_before": bce(before, targets),
        "val_loss_after": bce(probabilities, targets),
        "labels_calibrated": float(0 if temperatures is None else int((temperatures != 1.0).sum())),
        "labels_thresholds_tuned": float(len(labels) - len(untuned) - len(pooled)),
        "labels_threshold_pooled": float(len(pooled)),
    }
    return {"temperatures": temperatures, "thresholds": thresholds, "notes": notes, "summary": summary}


def _listed(labels: list[str], which: list[int]) -> str:
    return ", ".join(labels[i] for i in which[:20]) + (" …" if len(which) > 20 else "")
