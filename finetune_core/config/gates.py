"""Configuration of the evaluation gates (`gates`): thresholds and rules only; the decision
itself is ``finetune_core.evaluation.gates.evaluate_gates``."""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from finetune_core.config.base import Strict
from finetune_core.metric_table import primary_metric


class ParityGates(Strict):
    """How closely an exported ONNX form must match the PyTorch model on the test split before it is
    served (docs/how-to/serving.md); a form that fails is not served."""

    min_agreement: float = Field(
        0.995,
        ge=0,
        le=1,
        description="Smallest share of test rows whose label the ONNX form and PyTorch agree on "
        "(multilabel: per label, the lowest label counts). Not used for regression.",
    )
    max_metric_difference: float = Field(
        0.005,
        ge=0,
        description="Largest difference in the primary test metric between the ONNX form and PyTorch, "
        "in the metric's units (0.005: half a point of accuracy).",
    )


class GatesConfig(Strict):
    beat_baseline: bool = Field(
        True,
        description="The primary metric must be strictly better than the trivial baseline's on the test set "
        "(the train majority class for classification, the train mean for regression).",
    )
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
    parity: ParityGates = Field(
        default_factory=ParityGates,
        description="Parity of the exported ONNX forms with the PyTorch model (serving.onnx).",
    )

    @field_validator("min", "max", "max_regression")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not np.isfinite(v)]
        if bad:
            raise ValueError(f"thresholds must be finite numbers: {bad}")
        return value

    def metrics(self) -> set[str]:
        return set(self.min) | set(self.max) | set(self.max_regression)

    def regression_rules(self, task: str, metric: str | None = None) -> dict[str, float]:
        """``max_regression``, else: the primary metric (``training.metric``) must not get worse."""
        return self.max_regression or {primary_metric(task, metric)[0]: 0.0}
