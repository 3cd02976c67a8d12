"""Configuration of data validation (`validation`): each check, its default severity, thresholds.

Checks with a threshold on a share or a count have two levels: a warning level (the field
named after the threshold, e.g. ``max_duplicate_fraction``) that reports and lets the run go on,
and an error level (the same name with ``_error``) that stops the run. ``severity.<check>``
keeps its meaning for such a check: what failing the *warning* level does (``error`` stops
there already, ``off`` skips both levels); the error level stops the run unless it is null.
"""

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
    "label_types": ("train labels are all numbers or all words, not a mix (classification)", "error"),
    "label_typos": (
        "no train label is a case/spacing variant or likely misspelling of another (classification)",
        "error",
    ),
    "labels_known": ("validation/test labels all occur in train (classification, multilabel)", "error"),
    "label_format": (
        "each label value is a list of labels, or a string split on `data.label_separator` (multilabel)",
        "error",
    ),
    "empty_labels": ("each row has at least one label (multilabel; `warning`: rows with no label allowed)", "warning"),
    "min_classes": ("train has at least two classes (classification)", "error"),
    "class_rows": (
        "every train class has at least `min_class_rows` rows; stops below `min_class_rows_error`",
        "warning",
    ),
    "class_fraction": (
        "every train class has at least `min_class_fraction` of the rows; stops below `min_class_fraction_error`",
        "warning",
    ),
    "target_finite": ("targets are finite numbers (regression)", "error"),
    "target_bounds": ("targets lie within `target_min`..`target_max` (regression, when set)", "error"),
    "duplicates": (
        "at most `max_duplicate_fraction` of a split repeats an earlier text; "
        "stops above `max_duplicate_fraction_error`",
        "warning",
    ),
    "leakage": ("at most `max_leakage_fraction` of validation/test texts also occur in train", "error"),
}

# Checks with two levels: check -> (warning-level field, error-level field, "max" | "min").
# For "max" thresholds the error level is the larger one, for "min" thresholds the smaller one.
LEVELS: dict[str, tuple[str, str, str]] = {
    "duplicates": ("max_duplicate_fraction", "max_duplicate_fraction_error", "max"),
    "class_fraction": ("min_class_fraction", "min_class_fraction_error", "min"),
    "class_rows": ("min_class_rows", "min_class_rows_error", "min"),
}


def _looser(direction: str, error: float, warning: float) -> bool:
    """The error level is at least as permissive as the warning level."""
    return error >= warning if direction == "max" else error <= warning


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
    min_class_fraction: float = Field(
        0.01, ge=0, lt=1, description="Warning level: smallest share of train rows a class may have."
    )
    min_class_fraction_error: float | None = Field(
        None, ge=0, lt=1, description="Error level: a class with a smaller share of train stops the run (null: never)."
    )
    # A class needs a handful of rows to be learnt at all; with fewer than 5, a 10 % held-out
    # validation split gets none of them and its test metrics are noise (the malformed-data corpus:
    # a class of 2 in 300 rows trained and became champion).
    min_class_rows: int = Field(10, ge=0, description="Warning level: fewest train rows a class may have.")
    min_class_rows_error: int | None = Field(
        5, ge=0, description="Error level: a class with fewer train rows stops the run (null: never)."
    )
    target_min: float | None = Field(None, description="Smallest allowed regression target.")
    target_max: float | None = Field(None, description="Largest allowed regression target.")
    max_duplicate_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Warning level: largest share of a split whose normalised text repeats an earlier row.",
    )
    # Half a split repeating itself is no longer a dataset with some duplicates but a few texts
    # copied (the corpus: 20 texts x 20 trained and became champion); above it the run stops.
    max_duplicate_fraction_error: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="Error level: a larger share of repeated texts in a split stops the run (null: never).",
    )
    max_leakage_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Largest share of validation/test texts (normalised: case, whitespace) also in train.",
    )
    # Not a Great Expectations check: it needs a model's view of the rows, so it runs after the
    # frozen stage (docs/concepts/label-review.md).
    suspect_labels: Severity = Field(
        "warning",
        description="Label review after the frozen stage (out-of-fold predictions over the cached features, "
        "confident learning): what more than max_suspect_label_fraction of suspect train labels does. warning: "
        "reported and the run goes on; error: the run stops before the unfrozen stage; off: no review.",
    )
    max_suspect_label_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Largest share of train rows the label review may flag as probably mislabelled before "
        "suspect_labels applies.",
    )
    severity: dict[str, Severity] = Field(
        default_factory=dict,
        description="Per-check severity overrides (error | warning | off; for a check with two levels, what "
        "failing its warning level does); checks: " + ", ".join(CHECKS) + ".",
    )
    examples: int = Field(
        5,
        ge=0,
        le=100,
        description="Example rows shown per failed check in the reports (more to diagnose a failure, 0 to keep "
        "rows out of shared reports).",
    )
    chunk_rows: int = Field(
        100_000,
        ge=1,
        description="Rows validated at once; larger splits are validated chunk by chunk, with the whole-split "
        "checks (row counts, duplicates, leakage, label set, class shares) counted over every chunk first. Lower "
        "it where a chunk does not fit in memory (wide rows, a small worker).",
    )

    @model_validator(mode="before")
    @classmethod
    def _error_level_follows_a_looser_warning_level(cls, data):
        """A configuration that sets only the warning level looser than the default error level (as
        configurations written before the error level existed may: `max_duplicate_fraction: 1.0`)
        moves the error level with it, instead of being stopped by a level it never asked for."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for warning_field, error_field, direction in LEVELS.values():
            default = cls.model_fields[error_field].default
            warning = data.get(warning_field)
            if error_field in data or default is None or not isinstance(warning, (int, float)):
                continue
            if not _looser(direction, default, warning):
                data[error_field] = warning
        return data

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
        for warning_field, error_field, direction in LEVELS.values():
            warning, error = getattr(self, warning_field), getattr(self, error_field)
            if error is not None and not _looser(direction, error, warning):
                relation = "below" if direction == "max" else "above"
                raise ValueError(
                    f"{error_field} ({error}) is {relation} {warning_field} ({warning}): "
                    "the error level must be at least as permissive as the warning level"
                )
        return self

    def severity_of(self, check: str) -> Severity:
        return self.severity.get(check, CHECKS[check][1])

    def levels(self, check: str) -> list[tuple[Severity, float]]:
        """(severity, threshold) of each level of ``check`` that runs: the warning-level threshold
        at ``severity_of(check)``, then the error level when it adds anything."""
        severity = self.severity_of(check)
        if severity == "off":
            return []
        if check not in LEVELS:
            raise KeyError(f"{check} has no threshold levels")
        warning_field, error_field, _ = LEVELS[check]
        warning, error = getattr(self, warning_field), getattr(self, error_field)
        planned: list[tuple[Severity, float]] = []
        if severity == "error" or error is None or error != warning:
            planned.append((severity, warning))
        if severity != "error" and error is not None:
            planned.append(("error", error))
        return planned
