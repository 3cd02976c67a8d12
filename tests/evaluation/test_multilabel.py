"""Multilabel metrics against scikit-learn, per-label thresholds against the 0.5 baseline, served
predictions scored as the champion is, the trivial baseline, and the review files."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from finetune_core.evaluation.baseline import trivial_baseline
from finetune_core.evaluation.gates import per_example_scores
from finetune_core.evaluation.review import write_review_files
from finetune_core.metrics.multilabel import (
    fit_decision_rule,
    multilabel_metrics,
    sigmoid,
    tune_thresholds,
)
from finetune_core.metrics.served import comparable, served_metrics
from finetune_core.serving.predictor import ModelMeta, outputs_to_frame

LABELS = ["a", "b", "c"]


def random_case(rows=200, seed=0):
    rng = np.random.default_rng(seed)
    truth = (rng.random((rows, 3)) < [0.5, 0.2, 0.05]).astype(np.float32)
    probabilities = np.clip(0.6 * truth + 0.5 * rng.random((rows, 3)) - 0.1, 0, 1)
    return truth, probabilities


def test_metrics_match_scikit_learn():
    truth, probabilities = random_case()
    predicted = probabilities >= 0.4
    metrics = multilabel_metrics(truth, probabilities, predicted, LABELS)
    assert np.isclose(metrics["f1_micro"], f1_score(truth, predicted, average="micro"))
    assert np.isclose(metrics["f1_macro"], f1_score(truth, predicted, average="macro"))  # every label occurs
    assert np.isclose(metrics["subset_accuracy"], accuracy_score(truth, predicted))
    assert np.isclose(metrics["roc_auc_macro"], roc_auc_score(truth, probabilities, average="macro"))
    assert np.isclose(metrics["f1_b"], f1_score(truth[:, 1], predicted[:, 1]))
    assert metrics["support_c"] == truth[:, 2].sum()


def test_macro_f1_leaves_out_labels_absent_from_the_rows_and_never_predicted():
    truth = np.array([[1, 0, 0], [0, 1, 0]], dtype=float)
    predicted = truth.copy()
    assert multilabel_metrics(truth, truth, predicted, LABELS)["f1_macro"] == 1.0


def test_tuned_thresholds_beat_a_global_half_where_probabilities_are_low():
    # a rare label whose probabilities never reach 0.5 but rank its rows perfectly
    truth = np.zeros((50, 2))
    truth[:5, 0] = 1
    truth[::2, 1] = 1
    probabilities = np.column_stack([np.where(truth[:, 0] > 0, 0.3, 0.05), np.where(truth[:, 1] > 0, 0.8, 0.2)])
    thresholds, untuned, pooled = tune_thresholds(probabilities, truth)
    assert untuned == pooled == [] and np.isclose(thresholds[0], 0.175) and np.isclose(thresholds[1], 0.5)
    tuned = multilabel_metrics(truth, probabilities, probabilities >= thresholds, ["rare", "common"])
    half = multilabel_metrics(truth, probabilities, probabilities >= 0.5, ["rare", "common"])
    assert tuned["f1_macro"] == 1.0 and half["f1_macro"] == 0.5


def test_tuning_never_loses_to_a_half_on_the_rows_it_is_tuned_on():
    for seed in range(5):
        truth, probabilities = random_case(seed=seed)
        thresholds, _, pooled = tune_thresholds(probabilities, truth)
        assert not pooled  # every label has 3+ positive rows: its own cut
        tuned = multilabel_metrics(truth, probabilities, probabilities >= thresholds, LABELS)
        half = multilabel_metrics(truth, probabilities, probabilities >= 0.5, LABELS)
        assert tuned["f1_macro"] >= half["f1_macro"]


def test_labels_without_positives_or_ranking_keep_the_default():
    truth = np.array([[1, 0], [0, 0], [1, 0]], dtype=float)
    probabilities = np.array([[0.2, 0.3], [0.2, 0.1], [0.2, 0.2]])  # label 0: all tied; label 1: no positive
    thresholds, untuned, pooled = tune_thresholds(probabilities, truth)  # too few rows for own cuts: pooled
    assert untuned == [] and pooled == [0, 1] and thresholds[0] == thresholds[1] == pytest.approx(0.15)
    thresholds, untuned, pooled = tune_thresholds(probabilities, np.zeros_like(truth))  # no positive anywhere
    assert thresholds.tolist() == [0.5, 0.5] and untuned == [0, 1] and pooled == []


def test_labels_with_few_positive_rows_share_one_pooled_cut():
    rng = np.random.default_rng(0)
    truth = np.zeros((100, 3))
    truth[:30, 0] = 1
    truth[[0, 50], 1] = 1  # two positives: its own cut would sit at one row's probability
    truth[:40, 2] = 1
    probabilities = np.clip(0.3 + 0.4 * truth + rng.normal(0, 0.05, truth.shape), 0, 1)
    probabilities[50, 1], probabilities[0, 1] = 0.05, 0.9  # one positive ranks last: its own cut would be 0.05
    thresholds, untuned, pooled = tune_thresholds(probabilities, truth)
    assert untuned == [] and pooled == [1]
    cut = thresholds[1]
    assert 0.4 < cut < 0.6  # between the pooled negatives (~0.3) and positives (~0.7)
    assert (probabilities[:, 1] >= cut).sum() == 1  # not nearly every row, as a cut at 0.05 would
    rule = fit_decision_rule(np.log(probabilities / (1 - probabilities)), truth, LABELS, calibrate=False)
    assert any("one pooled threshold" in note and "b" in note for note in rule["notes"])
    assert rule["summary"]["labels_threshold_pooled"] == 1


def test_decision_rule_calibrates_per_label_and_says_what_it_skipped():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (2000, 3))
    truth = (rng.random(true_logits.shape) < sigmoid(true_logits)).astype(float)
    truth[:, 2] = 0  # a label validation never shows
    logits = 3 * true_logits  # three times over-confident: the fitted temperature is about 3
    rule = fit_decision_rule(logits, truth, LABELS, calibrate=True)
    assert rule["temperatures"][2] == 1.0 and 2.5 < rule["temperatures"][0] < 3.5
    assert any("calibration skipped for 1 label(s)" in note and "c" in note for note in rule["notes"])
    assert any("one pooled threshold" in note and "for 1 label(s)" in note for note in rule["notes"])
    assert rule["summary"]["val_loss_after"] < rule["summary"]["val_loss_before"]
    uncalibrated = fit_decision_rule(logits, truth, LABELS, calibrate=False)
    assert uncalibrated["temperatures"] is None and "training.calibrate is false" in uncalibrated["notes"][0]


def served_frame(logits, thresholds=None):
    meta = ModelMeta(task="multilabel", text_column="text", max_length=8, labels=LABELS, thresholds=thresholds)
    return outputs_to_frame(logits, meta)


def test_served_predictions_apply_the_stored_thresholds_and_score_like_the_metrics():
    truth, probabilities = random_case(rows=60)
    logits = np.log(probabilities + 1e-6) - np.log(1 - probabilities + 1e-6)
    served = served_frame(logits, thresholds=[0.4, 0.3, 0.9])
    assert list(served.columns) == ["labels", "probability_a", "probability_b", "probability_c"]
    expected = sigmoid(logits) >= [0.4, 0.3, 0.9]
    assert [list(r) for r in served["labels"]] == [[LABELS[j] for j in np.flatnonzero(row)] for row in expected]
    ids = [np.flatnonzero(row) for row in truth]
    metrics = served_metrics("multilabel", served, np.array(ids, dtype=object), LABELS)
    assert np.isclose(metrics["f1_micro"], f1_score(truth, expected, average="micro"))
    assert comparable("multilabel", served, LABELS) is None
    assert "no `labels` column" in comparable("multilabel", served.drop(columns="labels"), LABELS)
    scores = per_example_scores("multilabel", np.array(ids, dtype=object), expected.astype(float))
    assert scores.shape == (60,) and ((0 <= scores) & (scores <= 1)).all()


def test_the_trivial_baseline_predicts_the_most_frequent_label():
    train = np.array([[0], [0, 1], [2], [0]], dtype=object)
    test = np.array([[0], [1], [0, 2]], dtype=object)
    baseline = trivial_baseline("multilabel", train, test, LABELS)
    assert baseline.name == "most-frequent-label" and "'a'" in baseline.predicts
    assert np.isclose(baseline.metrics["subset_accuracy"], 1 / 3)


def test_review_files_have_a_per_label_report_and_a_cooccurrence_view(tmp_path):
    truth, probabilities = random_case(rows=40)
    logits = np.log(probabilities + 1e-6) - np.log(1 - probabilities + 1e-6)
    served = served_frame(logits, thresholds=[0.5, 0.3, 0.2])
    targets = np.array([np.flatnonzero(row) for row in truth], dtype=object)
    stages = {"frozen": {"history": [{"epoch": 1, "train_loss": 0.5, "val_f1_macro": 0.4}]}}
    files = write_review_files(
        tmp_path, "multilabel", [f"t{i}" for i in range(40)], targets, served, LABELS, stages, [0.5, 0.3, 0.2]
    )
    assert {"per_label_report", "label_cooccurrence", "label_cooccurrence_plot", "worst_examples"} <= set(files)
    report = files["per_label_report"].read_text()
    assert "threshold" in report and "0.3000" in report
    matrix = pd.read_csv(files["label_cooccurrence"], index_col=0)
    predicted = served[["probability_a", "probability_b", "probability_c"]].to_numpy() >= [0.5, 0.3, 0.2]
    assert matrix.loc["a", "a"] == int(((truth[:, 0] > 0) & predicted[:, 0]).sum())
    worst = pd.read_csv(files["worst_examples"])
    assert {"true_labels", "predicted_labels", "row_f1"} <= set(worst.columns)


def test_a_label_train_never_showed_keeps_the_default_threshold():
    truth = np.array([[1, 1], [0, 0], [1, 0], [0, 0]], dtype=float)
    probabilities = np.array([[0.9, 0.02], [0.1, 0.03], [0.8, 0.01], [0.2, 0.04]])
    thresholds, untuned, _ = tune_thresholds(probabilities, truth, trained=np.array([True, False]))
    assert thresholds[1] == 0.5 and untuned == [1]
    # had train shown it, its one positive row would get the pooled cut, not a cut below that row
    assert tune_thresholds(probabilities, truth)[0][1] == 0.5


def test_gates_read_multilabel_metrics():
    from finetune_core.config.gates import GatesConfig
    from finetune_core.evaluation.gates import evaluate_gates
    from finetune_core.metric_table import unknown_metrics

    gates = GatesConfig(min={"f1_macro": 0.5, "f1_b": 0.2}, beat_baseline=True)
    assert unknown_metrics("multilabel", ["f1_macro", "f1_b", "recall_a", "accuracy"], LABELS) == ["accuracy"]
    train = np.array([[0], [0, 1], [2], [0]], dtype=object)
    baseline = trivial_baseline("multilabel", train, np.array([[0], [1], [0, 2]], dtype=object), LABELS)
    ours = {"f1_macro": 0.6, "f1_b": 0.1, "f1_micro": 0.7}
    champion = {"f1_macro": 0.65, "f1_b": 0.3, "f1_micro": 0.7}
    verdict = evaluate_gates("multilabel", ours, gates, champion, "1", baseline=baseline)
    outcome = {(c.rule, c.metric): c.passed for c in verdict.checks}
    assert outcome == {
        ("min", "f1_macro"): True,
        ("min", "f1_b"): False,
        ("baseline", "f1_macro"): True,
        ("regression", "f1_macro"): False,  # the primary metric of multilabel: macro-F1, 0.05 worse
    }
