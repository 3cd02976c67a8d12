"""Evaluation gates as a pure function: thresholds, the trivial baseline, no regression against
the champion, significance; the baseline itself and how the version description reports it."""

import numpy as np
import pandas as pd
import pytest

from finetune_core.config.gates import GatesConfig
from finetune_core.config.loading import validate_config
from finetune_core.errors import ConfigError
from finetune_core.evaluation.baseline import original_train_labels, trivial_baseline
from finetune_core.evaluation.gates import evaluate_gates, paired_bootstrap_p_value
from finetune_core.evaluation.model_card import version_description
from finetune_core.metric_table import unknown_metrics
from finetune_core.metrics.served import comparable, served_metrics

METRICS = {"accuracy": 0.86, "f1_macro": 0.85, "loss": 0.40, "ece": 0.03}


def test_absolute_minimums_and_maximums():
    passed = evaluate_gates("classification", METRICS, GatesConfig(min={"accuracy": 0.85}, max={"loss": 0.5}))
    assert passed.passed and len(passed.checks) == 3  # min, max, and "no champion yet"
    failed = evaluate_gates("classification", METRICS, GatesConfig(min={"accuracy": 0.9}))
    assert not failed.passed and failed.reasons == ["accuracy 0.8600 < minimum 0.9000"]


def test_first_version_passes_the_champion_comparison_trivially():
    verdict = evaluate_gates("classification", METRICS, GatesConfig())
    assert verdict.passed and verdict.checks[0].reason == "no champion yet: first version"


def test_no_regression_against_the_champion_in_each_metrics_direction():
    champion = {"accuracy": 0.88, "f1_macro": 0.87, "loss": 0.35, "ece": 0.02}
    default = evaluate_gates("classification", METRICS, GatesConfig(), champion, "3")
    assert not default.passed and "worse by 0.0200" in default.reasons[0] and "champion v3" in default.reasons[0]
    tolerant = evaluate_gates("classification", METRICS, GatesConfig(max_regression={"accuracy": 0.03}), champion, "3")
    assert tolerant.passed
    loss = evaluate_gates("classification", METRICS, GatesConfig(max_regression={"loss": 0.01}), champion, "3")
    assert not loss.passed and "loss 0.4000 vs champion v3 0.3500" in loss.reasons[0]  # lower is better
    regression = evaluate_gates(
        "regression",
        {"mse": 0.2, "mae": 0.3, "r2": 0.8, "spearman": 0.9},
        GatesConfig(),
        {"mse": 0.25, "mae": 0.3, "r2": 0.7, "spearman": 0.85},
        "1",
    )
    assert regression.passed  # a smaller MSE is an improvement


def test_paired_bootstrap_significance():
    rng = np.random.default_rng(0)
    champion = (rng.random(800) < 0.80).astype(float)
    better = np.maximum(champion, (rng.random(800) < 0.15).astype(float))  # fixes some errors, breaks none
    assert paired_bootstrap_p_value(better, champion) < 0.01
    assert paired_bootstrap_p_value(champion, champion) > 0.5
    gates = GatesConfig(require_significant=True, max_regression={"accuracy": 0.0})
    same = {"accuracy": champion.mean()}
    verdict = evaluate_gates("classification", same, gates, same, "1", scores=(champion, champion))
    assert not verdict.passed and verdict.reasons[0].startswith("paired bootstrap p =")
    improved = evaluate_gates(
        "classification", {"accuracy": better.mean()}, gates, same, "1", scores=(better, champion)
    )
    assert improved.passed and improved.p_value < 0.05


def test_a_gate_on_a_metric_the_task_does_not_produce_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"gates name metric\(s\) \['mse'\] that task classification does not produce"
    ):
        validate_config({"data": {"train": "a.csv", "test": "b.csv"}, "gates": {"min": {"mse": 0.1}}})
    with pytest.raises(ConfigError, match=r"\['accuracy'\] that task regression"):
        validate_config(
            {
                "task": "regression",
                "data": {"train": "a.csv", "test": "b.csv"},
                "gates": {"max_regression": {"accuracy": 0.0}},
            }
        )
    assert unknown_metrics("classification", ["recall_pos", "recall_neutral"], labels=["neg", "pos"]) == [
        "recall_neutral"
    ]


def test_served_predictions_score_like_the_engine_and_refuse_other_classes():
    served = pd.DataFrame(
        {"label": ["b", "a", "b"], "probability_a": [0.2, 0.7, 0.4], "probability_b": [0.8, 0.3, 0.6]}
    )
    metrics = served_metrics("classification", served, np.array([1, 0, 0]), ["a", "b"])
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["loss"] == pytest.approx(-np.log([0.8, 0.7, 0.4]).mean())
    assert comparable("classification", served, ["a", "b"]) is None
    assert "predicts classes ['a', 'b']" in comparable("classification", served, ["a", "b", "c"])


def test_majority_class_baseline_comes_from_train_and_is_scored_on_test():
    train = np.array([1] * 70 + [0] * 30)  # train majority: class 1 ("pos")
    test = np.array([1] * 40 + [0] * 60)  # the test majority differs: not peeked at
    baseline = trivial_baseline("classification", train, test, ["neg", "pos"])
    assert baseline.name == "majority-class" and "'pos', the most frequent class in train (70%)" in baseline.predicts
    assert baseline.metrics["accuracy"] == pytest.approx(0.4)
    assert baseline.metrics["f1_macro"] == pytest.approx((2 * 0.4 / 1.4) / 2)  # F1 of "pos", 0 for "neg"
    tie = trivial_baseline("classification", np.array([0, 1, 1, 0]), np.array([1, 1]), ["a", "b"])
    assert tie.metrics["accuracy"] == 0.0  # a tie predicts the lowest class id


def test_mean_prediction_baseline():
    baseline = trivial_baseline("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0]))
    assert baseline.name == "mean-prediction" and baseline.predicts.startswith("always 2,")
    assert baseline.metrics["mse"] == pytest.approx(1.0) and baseline.metrics["mae"] == pytest.approx(1.0)


def test_original_train_labels_leave_augmented_copies_out(tmp_path):
    path = tmp_path / "train_augmented.parquet"
    augmented = [False, False, False, True]
    pd.DataFrame({"text": list("abcd"), "label": [0, 0, 1, 1], "augmented": augmented}).to_parquet(path)
    assert original_train_labels(path).tolist() == [0, 0, 1]
    pd.DataFrame({"text": ["a"], "label": [2.5]}).to_parquet(tmp_path / "plain.parquet")
    assert original_train_labels(tmp_path / "plain.parquet").tolist() == [2.5]


def test_a_model_no_better_than_the_baseline_fails_by_default_even_as_first_version():
    train, test = np.array([1] * 6 + [0] * 4), np.array([1] * 51 + [0] * 49)
    baseline = trivial_baseline("classification", train, test, ["neg", "pos"])
    same = evaluate_gates("classification", {"accuracy": 0.51, "f1_macro": 0.3377}, GatesConfig(), baseline=baseline)
    assert not same.passed and same.checks[0].rule == "baseline"
    assert same.reasons == [
        "accuracy 0.5100 vs majority-class baseline 0.5100 on this test set: not better (macro-F1 0.3377 vs 0.3377; "
        "the baseline predicts always 'pos', the most frequent class in train (60%))"
    ]
    assert "no champion yet" in same.checks[1].reason  # the first version would otherwise pass
    better = evaluate_gates("classification", {"accuracy": 0.8, "f1_macro": 0.79}, GatesConfig(), baseline=baseline)
    assert better.passed and "on this test set: better (macro-F1 0.7900 vs" in better.checks[0].reason
    assert better.baseline == baseline  # kept for gates.json and the model card
    off = evaluate_gates("classification", {"accuracy": 0.51}, GatesConfig(beat_baseline=False), baseline=baseline)
    assert off.passed and [c.rule for c in off.checks] == ["regression"]
    assert GatesConfig().beat_baseline  # on without asking


def test_a_regression_model_must_have_a_smaller_mse_than_predicting_the_train_mean():
    baseline = trivial_baseline("regression", np.array([0.0, 2.0]), np.array([0.0, 2.0]))  # mse 1.0
    metrics = {"mse": 1.2, "mae": 1.0, "r2": -0.2, "spearman": 0.1}
    worse = evaluate_gates("regression", metrics, GatesConfig(), baseline=baseline)
    assert not worse.passed
    assert worse.reasons[0].startswith("mse 1.2000 vs mean-prediction baseline 1.0000 on this test set: not better")
    assert "the baseline predicts always 1, the mean train target" in worse.reasons[0]
    better = evaluate_gates("regression", {"mse": 0.5}, GatesConfig(), baseline=baseline)
    assert better.passed
    nan = evaluate_gates("regression", {"mse": float("nan")}, GatesConfig(), baseline=baseline)
    assert not nan.passed  # a diverged model is not better than anything


def test_the_version_description_says_a_model_below_the_baseline_is_not_champion():
    config = validate_config({"data": {"train": "a.csv", "test": "b.csv"}})
    baseline = trivial_baseline("classification", np.array([1, 1, 0]), np.array([1, 1, 0, 0]), ["neg", "pos"])
    metrics = {"accuracy": 0.5, "f1_macro": 0.3333, "loss": 0.69, "ece": 0.01}
    verdict = evaluate_gates("classification", metrics, config.gates, baseline=baseline)
    stage = {"epochs_run": 1, "epochs": 1, "best_epoch": 1, "wall_seconds": 1.0, "samples_per_second": 10.0}
    text = version_description(
        config,
        backbone="tiny",
        selection="only candidate",
        data={"fingerprint": "f", "rows": {"train": 3, "validation": 1, "test": 4}, "labels": ["neg", "pos"]},
        stages={"frozen": stage},
        metrics=metrics,
        verdict=verdict,
        run_link="run x",
    )
    assert "**Gate verdict: FAILED**" in text
    assert "**Not made champion: no better than the majority-class baseline on this test set.**" in text
    assert "- ✘ accuracy 0.5000 vs majority-class baseline 0.5000 on this test set: not better" in text
    assert "| metric | this version | majority-class baseline |" in text and "| accuracy | 0.5000 | 0.5000 |" in text
    assert "| loss | 0.6900 | - |" in text
