"""The calibration step, after stage 2: temperature scaling fitted on validation (or on the label
review's out-of-fold logits) and stored with the model; for multilabel, per-label temperatures and
decision thresholds. The math is metrics.calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.labels import read_labels
from finetune_core.data.multilabel import label_matrix
from finetune_core.data.prepare import PreparedData
from finetune_core.metrics.calibration import expected_calibration_error, fit_temperature
from finetune_core.metrics.multilabel import fit_decision_rule
from finetune_core.serving.predictor import load_meta, write_meta
from finetune_core.training.encoded_splits import outputs_for

__all__ = ["calibrate", "calibrate_out_of_fold", "out_of_fold_temperature"]

# An out-of-fold temperature that sharpens is the most probable one under a normal prior on log T with
# this standard deviation: on 16-32 rows the plain fit swung to T = 0.17-0.23 and raised test ECE up to
# sixfold; softening is fitted freely (docs/decisions/few-shot-temperature.md).
OUT_OF_FOLD_PRIOR_SD = 0.5


def calibrate(config: FinetuneConfig, prepared: PreparedData, model_dir: Path) -> dict:
    """Fit temperature scaling on validation and store it with the model (classification; a
    ``training.temperature`` given is stored instead); for multilabel, per-label temperatures and
    decision thresholds (tuned even when not calibrating)."""
    if prepared.task == "multilabel":
        outputs, targets, meta = outputs_for(config, prepared, model_dir, "validation")
        trained = label_matrix(read_labels(prepared.paths["train"]), len(prepared.labels)).sum(axis=0) > 0
        rule = fit_decision_rule(outputs, targets, prepared.labels, config.training.calibrate, trained)
        meta.thresholds = [float(t) for t in rule["thresholds"]]
        meta.temperatures = None if rule["temperatures"] is None else [float(t) for t in rule["temperatures"]]
        meta.calibration_notes = rule["notes"]
        write_meta(meta, model_dir)
        return rule["summary"]
    if prepared.task != "classification":
        return {}
    if config.training.temperature is not None:  # given (a sweep's winner trained on its validation rows)
        meta = load_meta(model_dir)
        meta.temperature = config.training.temperature
        write_meta(meta, model_dir)
        return {"temperature": meta.temperature, "temperature_given": 1.0}
    if not config.training.calibrate:
        return {}
    outputs, targets, meta = outputs_for(config, prepared, model_dir, "validation")
    return _save_temperature(meta, model_dir, outputs, targets, "val", fit_temperature(outputs, targets))


def calibrate_out_of_fold(model_dir: Path, logits, targets) -> dict:
    """The temperature of ``out_of_fold_temperature`` saved with the model, for a run with too few
    validation rows to fit it on (docs/concepts/label-review.md)."""
    temperature = out_of_fold_temperature(logits, targets)
    kept = temperature is None
    summary = _save_temperature(load_meta(model_dir), model_dir, logits, targets, "oof", 1.0 if kept else temperature)
    if kept:
        return {**summary, "oof_temperature_kept": 1.0}
    return {**summary, "oof_temperature_prior_sd": OUT_OF_FOLD_PRIOR_SD} if temperature < 1.0 else summary


def out_of_fold_temperature(logits, targets) -> float | None:
    """The temperature the label review's out-of-fold logits of the head call for. Softening (T >= 1)
    is fitted as it is: it moves the probabilities toward uniform and cannot make a confident mistake.
    Sharpening only when those predictions beat the majority class (None: keep 1), and drawn toward 1
    by the prior (``OUT_OF_FOLD_PRIOR_SD``): the large rises in test ECE in the benchmark all came from
    sharpening a head on a few rows (docs/decisions/few-shot-temperature.md)."""
    fitted = fit_temperature(logits, targets)
    if fitted >= 1.0:
        return fitted
    if not beats_majority(logits, targets):
        return None
    return fit_temperature(logits, targets, prior_sd=OUT_OF_FOLD_PRIOR_SD)


def beats_majority(logits, targets, level: float = 0.05) -> bool:
    """Whether the argmax is right more often than always answering the majority class would be,
    by a one-sided binomial test at ``level``."""
    targets = np.asarray(targets)
    if targets.size == 0:
        return False
    right = int((np.asarray(logits).argmax(axis=1) == targets).sum())
    majority = np.bincount(targets).max() / targets.size
    return majority < 1.0 and binomtest(right, targets.size, majority, alternative="greater").pvalue < level


def _save_temperature(meta, model_dir: Path, outputs, targets, prefix: str, temperature: float) -> dict:
    """``temperature`` saved with the model, and the error on ``outputs`` before and after it."""
    meta.temperature = temperature
    write_meta(meta, model_dir)
    return {
        "temperature": meta.temperature,
        f"{prefix}_ece_before": expected_calibration_error(outputs, targets),
        f"{prefix}_ece_after": expected_calibration_error(outputs, targets, meta.temperature),
    }
