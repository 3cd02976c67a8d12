"""Transferability scores from frozen features, without fine-tuning: LogME (You et al., ICML
2021), the log marginal evidence of a Bayesian linear model from the features to each target
column, maximised over its two precisions by a fixed-point iteration (no hyperparameters); and a
k-fold cross-validated logistic (classification) or ridge (regression) probe.

Multilabel targets (a 0/1 matrix, one column per label) are multi-output targets: LogME averages
the evidence of each label's column that has both values in the sample (the same per-column mean
as for one-hot classes), and the probe is one logistic regression per label scored by macro-F1."""

from __future__ import annotations

import numpy as np


def logme_column(f: np.ndarray, y: np.ndarray, sigma: np.ndarray, v: np.ndarray, iterations: int = 50):
    """(evidence per example, alpha, beta) for one target column; ``sigma, v`` eigen-decompose F^T F."""
    n, d = f.shape
    projected = v.T @ (f.T @ y)  # V^T F^T y: every iteration works in the eigenbasis
    alpha, beta = 1.0, 1.0
    for _ in range(iterations):
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        m = v @ (beta * projected / (alpha + beta * sigma))  # posterior mean of the weights
        new_alpha = gamma / (float(m @ m) + 1e-12)
        new_beta = (n - gamma) / (float(((y - f @ m) ** 2).sum()) + 1e-12)
        converged = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < 1e-6
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    m = v @ (beta * projected / (alpha + beta * sigma))
    m_norm, residual = float(m @ m), float(((y - f @ m) ** 2).sum())
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * np.log(alpha + beta * sigma).sum()
        - beta / 2 * residual
        - alpha / 2 * m_norm
        - n / 2 * np.log(2 * np.pi)
    )
    return evidence / n, alpha, beta


def logme(features: np.ndarray, targets: np.ndarray, task: str) -> float:
    """Mean LogME evidence per example over target columns (one-hot classes, or the
    standardised regression target, or each multilabel column with positives and negatives)."""
    f = np.asarray(features, dtype=np.float64)
    if task == "multilabel":
        y = np.asarray(targets, dtype=np.float64)
        columns = [y[:, j] for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)] or [y[:, 0]]
    elif task == "classification":
        columns = [(targets == c).astype(np.float64) for c in np.unique(targets)]
    else:
        y = np.asarray(targets, dtype=np.float64)
        columns = [(y - y.mean()) / (y.std() or 1.0)]
    sigma, v = np.linalg.eigh(f.T @ f)
    sigma = np.clip(sigma, 0.0, None)
    return float(np.mean([logme_column(f, y, sigma, v)[0] for y in columns]))


def probe_score(features: np.ndarray, targets: np.ndarray, task: str, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic probe, macro-F1 of one logistic probe per label
    (multilabel; labels without positives in the sample are left out), or R² of a ridge probe."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == "multilabel":
        from sklearn.multiclass import OneVsRestClassifier

        y = np.asarray(targets)
        y = y[:, (y.sum(axis=0) >= folds) & (y.sum(axis=0) < len(y))]  # every fold can see each label
        if y.shape[1] == 0:
            return 0.0
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=1000)))
        splitter = KFold(folds, shuffle=True, random_state=seed)
        return float(cross_val_score(model, features, y, cv=splitter, scoring="f1_macro").mean())
    if task == "classification":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        model, splitter = make_pipeline(StandardScaler(), RidgeCV()), KFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, features, targets, cv=splitter).mean())
