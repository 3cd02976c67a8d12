"""Evaluation gates: may a newly trained model replace the champion?

A pure function of this run's test metrics, the trivial baseline's on the same test set,
the champion's metrics **re-measured on this run's test set**, and (for the significance
test) both models' per-example scores on it. Four kinds of rule, all from `gates.*`:

- absolute floors and ceilings (`gates.min.accuracy: 0.85`, `gates.max.mse: 0.4`);
- the primary metric strictly better than the trivial baseline's (``evaluation.baseline``:
  train's majority class, or train's mean target), on by default (`gates.beat_baseline`): a
  model that learnt nothing from the text is never made champion, even as the first version;
- no regression against the champion beyond `gates.max_regression.<metric>` (in the metric's
  own units; a drop for larger-is-better metrics, a rise for the others);
- optionally, the primary metric's improvement over the champion must be significant under
  a paired bootstrap of the test examples (`gates.require_significant`).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from finetune_core.data.multilabel import label_matrix
from finetune_core.evaluation.baseline import Baseline
from finetune_core.metric_table import BASELINE_METRIC, larger_is_better, primary_metric


class GateCheck(BaseModel):
    rule: str  # min | max | baseline | regression | significance
    metric: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    reason: str


class GateVerdict(BaseModel):
    passed: bool
    checks: list[GateCheck] = Field(default_factory=list)
    champion_version: str | None = None
    champion_metrics: dict[str, float] | None = None
    baseline: Baseline | None = None
    p_value: float | None = None

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.checks if not c.passed]

    def summary(self) -> str:
        if self.passed:
            return (
                "passed: " + "; ".join(c.reason for c in self.checks) if self.checks else "passed (no gates configured)"
            )
        return "failed: " + "; ".join(self.reasons)


def paired_bootstrap_p_value(challenger: np.ndarray, champion: np.ndarray, samples: int = 2000, seed: int = 0) -> float:
    """One-sided p-value that the challenger's mean per-example score is no better than the
    champion's (scores: larger is better, e.g. 1 for a correct prediction), resampling
    test examples with replacement."""
    difference = np.asarray(challenger, dtype=np.float64) - np.asarray(champion, dtype=np.float64)
    rng = np.random.default_rng(seed)
    indexes = rng.integers(len(difference), size=(samples, len(difference)))
    means = difference[indexes].mean(axis=1)
    return float((np.sum(means <= 0) + 1) / (samples + 1))


def baseline_check(task: str, metrics: dict[str, float], baseline: Baseline) -> GateCheck:
    """The primary metric strictly better than the trivial baseline's on the same test set (a
    model no better than "always the majority class" has learnt nothing worth serving)."""
    metric, larger = BASELINE_METRIC[task]
    value, reference = metrics[metric], baseline.metrics[metric]
    ok = bool(value > reference if larger else value < reference)  # NaN: not better
    notes = [f"the baseline predicts {baseline.predicts}"]
    if "f1_macro" in metrics and "f1_macro" in baseline.metrics:  # what accuracy hides on imbalanced classes
        notes.insert(0, f"macro-F1 {metrics['f1_macro']:.4f} vs {baseline.metrics['f1_macro']:.4f}")
    reason = (
        f"{metric} {value:.4f} vs {baseline.name} baseline {reference:.4f} on this test set: "
        f"{'better' if ok else 'not better'} ({'; '.join(notes)})"
    )
    return GateCheck(rule="baseline", metric=metric, passed=ok, value=value, threshold=reference, reason=reason)


def bound_checks(metrics: dict[str, float], gates) -> list[GateCheck]:
    """The absolute floors (``gates.min``) and ceilings (``gates.max``), in that order."""
    checks = []
    for rule, bounds in (("min", gates.min), ("max", gates.max)):
        for metric, bound in bounds.items():
            value = metrics[metric]
            ok = value >= bound if rule == "min" else value <= bound
            sign = (">=" if ok else "<") if rule == "min" else ("<=" if ok else ">")
            name = "minimum" if rule == "min" else "maximum"
            reason = f"{metric} {value:.4f} {sign} {name} {bound:.4f}"
            checks.append(GateCheck(rule=rule, metric=metric, passed=ok, value=value, threshold=bound, reason=reason))
    return checks


def regression_checks(
    task: str, metrics: dict[str, float], gates, champion_metrics: dict[str, float], champion_version, primary
) -> list[GateCheck]:
    """No metric of ``gates.regression_rules`` worse than the champion's by more than it allows."""
    checks = []
    for metric, allowed in gates.regression_rules(task, primary).items():
        value, reference = metrics[metric], champion_metrics[metric]
        worse_by = (reference - value) if larger_is_better(task, metric) else (value - reference)
        ok = worse_by <= allowed
        reason = (
            f"{metric} {value:.4f} vs champion v{champion_version} {reference:.4f} on this test set "
            f"({'worse' if worse_by > 0 else 'better or equal'} by {abs(worse_by):.4f}; allowed {allowed:.4f})"
        )
        checks.append(
            GateCheck(rule="regression", metric=metric, passed=ok, value=value, threshold=reference, reason=reason)
        )
    return checks


def significance_check(task: str, gates, scores: tuple[np.ndarray, np.ndarray], primary) -> GateCheck:
    """The primary metric's improvement over the champion significant under a paired bootstrap;
    the check's value is the p-value."""
    p_value = paired_bootstrap_p_value(*scores, samples=gates.bootstrap_samples, seed=gates.seed)
    metric = primary_metric(task, primary)[0]
    ok = p_value < gates.significance_level
    reason = (
        f"paired bootstrap p = {p_value:.4f} {'<' if ok else '>='} "
        f"{gates.significance_level} for a better {metric} than the champion"
    )
    return GateCheck(
        rule="significance", metric=metric, passed=ok, value=p_value, threshold=gates.significance_level, reason=reason
    )


def evaluate_gates(
    task: str,
    metrics: dict[str, float],
    gates,
    champion_metrics: dict[str, float] | None = None,
    champion_version: str | None = None,
    scores: tuple[np.ndarray, np.ndarray] | None = None,
    not_comparable: str | None = None,
    baseline: Baseline | None = None,
    primary: str | None = None,
) -> GateVerdict:
    """Apply ``gates`` (a GatesConfig) to this run's ``metrics``. ``scores``: per-example scores
    (challenger, champion) on the same test rows, for the significance test. ``not_comparable``:
    why a champion (``champion_version``) could not be measured on this data (e.g. other classes),
    in which case there is nothing to regress against. ``baseline``: the trivial baseline on this
    test set (``evaluation.baseline``), checked when ``gates.beat_baseline``. ``primary``: the
    configured ``training.metric`` (unset: the task's default), for the champion comparison."""
    checks = bound_checks(metrics, gates)
    if gates.beat_baseline and baseline is not None:
        checks.append(baseline_check(task, metrics, baseline))
    verdict = GateVerdict(
        passed=True, champion_version=champion_version, champion_metrics=champion_metrics, baseline=baseline
    )
    if champion_metrics is None:
        reason = (
            f"champion v{champion_version} not comparable: {not_comparable}"
            if not_comparable
            else "no champion yet: first version"
        )
        checks.append(GateCheck(rule="regression", metric="*", passed=True, reason=reason))
    else:
        checks += regression_checks(task, metrics, gates, champion_metrics, champion_version, primary)
        if gates.require_significant and scores is not None:
            checks.append(significance_check(task, gates, scores, primary))
            verdict.p_value = checks[-1].value
    verdict.checks = checks
    verdict.passed = all(c.passed for c in checks)
    return verdict


def per_example_scores(task: str, targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Larger-is-better score of each test example: correctness (classification, predicted
    class ids), per-row F1 (multilabel, a 0/1 prediction matrix) or negative squared error (regression)."""
    if task == "classification":
        return (np.asarray(predictions) == np.asarray(targets)).astype(np.float64)
    if task == "multilabel":  # per-row F1 of the predicted label set (1 when both sets are empty)
        truth, predicted = label_matrix(targets, predictions.shape[1]) > 0.5, np.asarray(predictions) > 0.5
        overlap, sizes = (truth & predicted).sum(axis=1), truth.sum(axis=1) + predicted.sum(axis=1)
        return np.where(sizes == 0, 1.0, 2 * overlap / np.maximum(sizes, 1))
    return -((np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)) ** 2)
