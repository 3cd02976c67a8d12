"""Evaluation gates as a pure function: thresholds, no regression against the champion, significance."""

import numpy as np
import pandas as pd
import pytest

from finetune_core.config.gates import GatesConfig
from finetune_core.config.loading import validate_config
from finetune_core.errors import ConfigError
from finetune_core.evaluation.comparison import comparable, served_metrics
from finetune_core.evaluation.gates import evaluate_gates, paired_bootstrap_p_value
from finetune_core.evaluation.metric_table import unknown_metrics

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
