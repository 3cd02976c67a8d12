"""Temperature scaling, and the out-of-fold temperature of a run too small to hold out validation rows:
softening fitted freely; sharpening only when the out-of-fold predictions beat the majority class (a
binomial test), else kept at 1, and drawn toward 1 by a prior on log T."""

from __future__ import annotations

import numpy as np
import pytest

from finetune_core.evaluation.model_card import label_review_markdown
from finetune_core.metrics.calibration import expected_calibration_error, fit_temperature
from finetune_core.serving.outputs import ModelMeta, load_meta, write_meta
from finetune_core.training.calibration_step import beats_majority, calibrate_out_of_fold, out_of_fold_temperature


def _logits(predicted: np.ndarray, scale: float = 3.0) -> np.ndarray:
    return np.eye(2)[predicted] * scale


def test_predictions_right_on_most_rows_beat_the_majority_class():
    targets = np.array([0] * 8 + [1] * 8)
    assert beats_majority(_logits(targets), targets)


def test_nine_right_of_sixteen_do_not():
    targets = np.array([0] * 8 + [1] * 8)
    predicted = targets.copy()
    predicted[9:] = 1 - predicted[9:]
    assert not beats_majority(_logits(predicted), targets)


def test_always_the_majority_class_does_not_beat_it():
    targets = np.array([0] * 12 + [1] * 4)
    assert not beats_majority(_logits(np.zeros(16, dtype=int)), targets)


def test_one_class_or_no_rows_never_fit_a_temperature():
    assert not beats_majority(_logits(np.zeros(5, dtype=int)), np.zeros(5, dtype=int))
    assert not beats_majority(np.zeros((0, 2)), np.zeros(0, dtype=int))


def _drawn_at_temperature(rows: int, temperature: float, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): the temperature that calibrates them."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(rows, classes)) * 3
    probabilities = np.exp(logits / temperature)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return logits, np.array([rng.choice(classes, p=p) for p in probabilities])


def test_temperature_scaling_recovers_a_known_temperature():
    logits, targets = _drawn_at_temperature(4000, 2.0, classes=3)
    temperature = fit_temperature(logits, targets)
    assert temperature == pytest.approx(2.0, rel=0.1)
    assert expected_calibration_error(logits, targets, temperature) < expected_calibration_error(logits, targets) / 2


def test_a_prior_on_log_temperature_pulls_a_few_rows_toward_one_and_yields_to_many():
    few, many = _drawn_at_temperature(32, 0.5), _drawn_at_temperature(4000, 0.5)
    free, held = fit_temperature(*few), fit_temperature(*few, prior_sd=0.25)
    assert abs(np.log(held)) < abs(np.log(free)) and held < 1.0  # shrunk toward 1, on the data's side
    assert fit_temperature(*many, prior_sd=0.25) == pytest.approx(fit_temperature(*many), rel=0.05)
    assert fit_temperature(*many, prior_sd=0.25) == pytest.approx(0.5, rel=0.1)


def test_the_served_temperature_on_a_few_rows_that_beat_the_majority_is_drawn_toward_one():
    # 24 of 32 rows right with small logits, as on the benchmark's 16-per-class seed whose plain fit
    # sharpened the served head sevenfold (docs/benchmarks/label-review.md)
    logits, targets = _few_right(scale=0.3)
    assert beats_majority(logits, targets)
    free, served = fit_temperature(logits, targets), out_of_fold_temperature(logits, targets)
    assert free < served < 1.0 and abs(np.log(served)) < abs(np.log(free)) / 2


def test_the_served_temperature_on_many_rows_is_the_fitted_one():
    logits, targets = _drawn_at_temperature(4000, 0.5)
    assert out_of_fold_temperature(logits, targets) == pytest.approx(fit_temperature(logits, targets), rel=0.05)


def _nine_of_sixteen_right_and_surest_where_right() -> tuple[np.ndarray, np.ndarray]:
    """Does not beat the majority class, yet its NLL asks to sharpen (T < 1)."""
    targets = np.array([0] * 8 + [1] * 8)
    predicted = targets.copy()
    predicted[9:] = 1 - predicted[9:]
    return np.eye(2)[predicted] * np.where(predicted == targets, 0.5, 0.05)[:, None], targets


def test_no_sharpening_temperature_is_served_from_rows_that_do_not_beat_the_majority():
    logits, targets = _nine_of_sixteen_right_and_surest_where_right()
    assert fit_temperature(logits, targets) < 1.0
    assert out_of_fold_temperature(logits, targets) is None


def test_an_over_confident_head_is_softened_even_below_the_majority_class():
    targets = np.array([0] * 8 + [1] * 8)
    predicted = targets.copy()
    predicted[[0, 1, 2, 8, 9]] = 1 - predicted[[0, 1, 2, 8, 9]]  # right on 11 of 16, sure of every answer
    logits = _logits(predicted, scale=5.0)
    assert not beats_majority(logits, targets)
    served = out_of_fold_temperature(logits, targets)
    assert served > 1.0 and served == pytest.approx(fit_temperature(logits, targets))


def _few_right(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """32 rows, 24 right: beats the majority class."""
    targets = np.array([0] * 16 + [1] * 16)
    predicted = targets.copy()
    predicted[[0, 1, 2, 3, 16, 17, 18, 19]] = 1 - predicted[[0, 1, 2, 3, 16, 17, 18, 19]]
    return _logits(predicted, scale=scale), targets


@pytest.mark.parametrize("right", [True, False])
def test_the_model_and_its_description_say_which_temperature_was_served(tmp_path, right):
    write_meta(ModelMeta(task="classification", text_column="text", max_length=16, labels=["0", "1"]), tmp_path)
    logits, targets = _few_right(0.3) if right else _nine_of_sixteen_right_and_surest_where_right()
    summary = calibrate_out_of_fold(tmp_path, logits, targets)
    assert load_meta(tmp_path).temperature == summary["temperature"]
    description = label_review_markdown({"skipped": "off"}, summary)
    if right:
        assert summary["temperature"] == pytest.approx(out_of_fold_temperature(logits, targets))
        assert f"temperature {summary['temperature']:.3f} fitted on the out-of-fold predictions" in description
        assert "sharpening, drawn toward 1 by a prior on log T, sd 0.5" in description
    else:
        assert summary["temperature"] == 1.0 and "temperature kept at 1" in description
