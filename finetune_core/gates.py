"""Evaluation gates: may a newly trained model replace the champion?

A pure function of this run's test metrics, the champion's metrics **re-measured on this
run's test set**, and (for the significance test) both models' per-example scores on it.
Three kinds of rule, all from `gates.*`:

- absolute floors and ceilings (`gates.min.accuracy: 0.85`, `gates.max.mse: 0.4`);
- no regression against the champion beyond `gates.max_regression.<metric>` (in the metric's
  own units; a drop for larger-is-better metrics, a rise for the others);
- optionally, the primary metric's improvement over the champion must be significant under
  a paired bootstrap of the test examples (`gates.require_significant`).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from finetune_core.evaluation import PRIMARY_METRIC

# Metrics each task produces (per-class metrics are named precision_<class>, recall_<class>).
TASK_METRICS = {
    "classification": {"accuracy": True, "f1_macro": True, "loss": False, "ece": False},
    "regression": {"mse": False, "mae": False, "r2": True, "spearman": True},
}
PER_CLASS_PREFIXES = ("precision_", "recall_")


def larger_is_better(task: str, metric: str) -> bool:
    if metric.startswith(PER_CLASS_PREFIXES) and task == "classification":
        return True
    return TASK_METRICS[task][metric]


def unknown_metrics(task: str, names, labels: list[str] | None = None) -> list[str]:
    """Gate metrics the task does not produce (per-class names are checked when labels are known)."""
    known = set(TASK_METRICS[task])
    unknown = []
    for name in names:
        if name in known:
            continue
        if task == "classification" and name.startswith(PER_CLASS_PREFIXES):
            if labels is None or name.split("_", 1)[1] in labels:
                continue
        unknown.append(name)
    return unknown


class GatesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    min: dict[str, float] = Field(default_factory=dict, description="Absolute floors, e.g. {accuracy: 0.85}.")
    max: dict[str, float] = Field(default_factory=dict, description="Absolute ceilings, e.g. {mse: 0.4}.")
    max_regression: dict[str, float] = Field(
        default_factory=dict,
        description="Largest allowed worsening against the champion re-evaluated on this test set, per metric, "
        "e.g. {accuracy: 0.01}. Unset: the primary metric must not get worse at all.",
    )
    require_significant: bool = Field(
        False, description="The primary metric must beat the champion under a paired bootstrap of the test set."
    )
    significance_level: float = Field(0.05, gt=0, lt=1, description="One-sided p-value threshold.")
    bootstrap_samples: int = Field(2000, ge=100, description="Bootstrap resamples of the test set.")
    seed: int = Field(0, ge=0, description="Bootstrap seed.")

    @field_validator("min", "max", "max_regression")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not np.isfinite(v)]
        if bad:
            raise ValueError(f"thresholds must be finite numbers: {bad}")
        return value

    def metrics(self) -> set[str]:
        return set(self.min) | set(self.max) | set(self.max_regression)

    def regression_rules(self, task: str) -> dict[str, float]:
        return self.max_regression or {PRIMARY_METRIC[task][0]: 0.0}


class GateCheck(BaseModel):
    rule: str  # min | max | regression | significance
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
    p_value: float | None = None

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.checks if not c.passed]

    def summary(self) -> str:
        if self.passed:
            return "passed: " + "; ".join(c.reason for c in self.checks) if self.checks else "passed (no gates configured)"
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


def evaluate_gates(task: str, metrics: dict[str, float], gates, champion_metrics: dict[str, float] | None = None,
                   champion_version: str | None = None, scores: tuple[np.ndarray, np.ndarray] | None = None) -> GateVerdict:
    """Apply ``gates`` (a GatesConfig) to this run's ``metrics``. ``scores``: per-example scores
    (challenger, champion) on the same test rows, for the significance test."""
    checks: list[GateCheck] = []
    for metric, floor in gates.min.items():
        value = metrics[metric]
        ok = value >= floor
        checks.append(GateCheck(rule="min", metric=metric, passed=ok, value=value, threshold=floor,
                                reason=f"{metric} {value:.4f} {'>=' if ok else '<'} minimum {floor:.4f}"))
    for metric, ceiling in gates.max.items():
        value = metrics[metric]
        ok = value <= ceiling
        checks.append(GateCheck(rule="max", metric=metric, passed=ok, value=value, threshold=ceiling,
                                reason=f"{metric} {value:.4f} {'<=' if ok else '>'} maximum {ceiling:.4f}"))
    verdict = GateVerdict(passed=True, champion_version=champion_version, champion_metrics=champion_metrics)
    if champion_metrics is None:
        checks.append(GateCheck(rule="regression", metric="*", passed=True, reason="no champion yet: first version"))
    else:
        for metric, allowed in gates.regression_rules(task).items():
            value, reference = metrics[metric], champion_metrics[metric]
            worse_by = (reference - value) if larger_is_better(task, metric) else (value - reference)
            ok = worse_by <= allowed
            checks.append(GateCheck(
                rule="regression", metric=metric, passed=ok, value=value, threshold=reference,
                reason=f"{metric} {value:.4f} vs champion v{champion_version} {reference:.4f} on this test set "
                       f"({'worse' if worse_by > 0 else 'better or equal'} by {abs(worse_by):.4f}; allowed {allowed:.4f})"))
        if gates.require_significant and scores is not None:
            verdict.p_value = paired_bootstrap_p_value(*scores, samples=gates.bootstrap_samples, seed=gates.seed)
            primary = PRIMARY_METRIC[task][0]
            ok = verdict.p_value < gates.significance_level
            checks.append(GateCheck(
                rule="significance", metric=primary, passed=ok, value=verdict.p_value, threshold=gates.significance_level,
                reason=f"paired bootstrap p = {verdict.p_value:.4f} {'<' if ok else '>='} {gates.significance_level} "
                       f"for a better {primary} than the champion"))
    verdict.checks = checks
    verdict.passed = all(c.passed for c in checks)
    return verdict


def per_example_scores(task: str, targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Larger-is-better score of each test example: correctness (classification, predicted
    class ids) or negative squared error (regression)."""
    if task == "classification":
        return (np.asarray(predictions) == np.asarray(targets)).astype(np.float64)
    return -((np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)) ** 2)
