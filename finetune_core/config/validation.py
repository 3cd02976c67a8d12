"""Configuration of data validation (`validation`): each check, its default severity, thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from finetune_core.config.base import Strict

Severity = Literal["error", "warning", "off"]

# Each check, what it guards, and its default severity: `error` stops the run before training,
# `warning` is reported and the run goes on, `off` skips it.
CHECKS: dict[str, tuple[str, Severity]] = {
    "columns": ("the text and label columns exist", "error"),
    "min_rows": ("each split has at least the minimum number of rows", "error"),
    "text_not_blank": ("texts are neither missing nor blank after stripping", "error"),
    "text_length": ("text length in characters lies within bounds", "warning"),
    "text_tokens": ("text length in tokens stays within `max_text_tokens` (when set)", "warning"),
    "label_not_null": ("every row has a label", "error"),
    "labels_known": ("validation/test labels all occur in train (classification)", "error"),
    "min_classes": ("train has at least two classes (classification)", "error"),
    "class_fraction": ("every train class has at least `min_class_fraction` of the rows", "warning"),
    "target_finite": ("targets are finite numbers (regression)", "error"),
    "target_bounds": ("targets lie within `target_min`..`target_max` (regression, when set)", "error"),
    "duplicates": ("at most `max_duplicate_fraction` of a split repeats an earlier text", "warning"),
    "leakage": ("at most `max_leakage_fraction` of validation/test texts also occur in train", "error"),
}


class ValidationConfig(Strict):
    enabled: bool = Field(True, description="Run the Great Expectations suites before training.")
    min_train_rows: int = Field(10, ge=1, description="Fewest rows the training file may have.")
    min_eval_rows: int = Field(1, ge=1, description="Fewest rows a validation or test file may have.")
    min_text_chars: int = Field(1, ge=0, description="Shortest text in characters (after nothing is stripped).")
    max_text_chars: int = Field(10_000, ge=1, description="Longest text in characters.")
    max_text_tokens: int | None = Field(
        None,
        ge=1,
        description="Longest text in tokens of the first backbone candidate's tokenizer (unset: not checked).",
    )
    min_class_fraction: float = Field(0.01, ge=0, lt=1, description="Smallest share of train rows a class may have.")
    target_min: float | None = Field(None, description="Smallest allowed regression target.")
    target_max: float | None = Field(None, description="Largest allowed regression target.")
    max_duplicate_fraction: float = Field(
        0.1, ge=0, le=1, description="Largest share of a split whose normalised text repeats an earlier row."
    )
    max_leakage_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Largest share of validation/test texts (normalised: case, whitespace) also in train.",
    )
    severity: dict[str, Severity] = Field(
        default_factory=dict,
        description="Per-check severity overrides (error | warning | off); checks: " + ", ".join(CHECKS) + ".",
    )
    examples: int = Field(5, ge=0, le=100, description="Example rows shown per failed check in the reports.")
    chunk_rows: int = Field(
        100_000,
        ge=1,
        description="Rows validated at once; larger splits are validated chunk by chunk, with the "
        "whole-split checks (row counts, duplicates, leakage, label set, class shares) counted over every chunk first.",
    )

    @field_validator("severity")
    @classmethod
    def _known_checks(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        unknown = sorted(set(value) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; checks are: {', '.join(CHECKS)}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> ValidationConfig:
        if self.min_text_chars > self.max_text_chars:
            raise ValueError("min_text_chars is larger than max_text_chars")
        if self.target_min is not None and self.target_max is not None and self.target_min > self.target_max:
            raise ValueError("target_min is larger than target_max")
        return self

    def severity_of(self, check: str) -> Severity:
        return self.severity.get(check, CHECKS[check][1])
