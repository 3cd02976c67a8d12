"""Great Expectations checks on multilabel label sets: format, rows with no label (allowed or not by
configuration), labels unknown to train in validation/test, rare labels, and label typos."""

import pandas as pd

from finetune_core.config.validation import ValidationConfig
from finetune_core.validation.suites import run_suites

TOPICS = ["grain", "wheat", "earn", "acq"]


def frames(rows: int = 60) -> dict[str, pd.DataFrame]:
    def make(count, offset):
        return pd.DataFrame(
            {
                "text": [f"story {i} on {TOPICS[i % 4]}" for i in range(offset, offset + count)],
                "labels": [[TOPICS[i % 4]] + (["wheat"] if i % 4 == 0 else []) for i in range(offset, offset + count)],
            }
        )

    return {"train": make(rows, 0), "test": make(12, 1000)}


def validate(data, separator=None, **settings):
    sources = {split: f"{split}.jsonl" for split in data}
    config = ValidationConfig(**settings)
    return run_suites(data, sources, ["text"], "labels", "multilabel", config, separator=separator)


def failed(report) -> dict[tuple[str, str], str]:
    return {(r.split, r.check): r.severity for r in report.failures()}


def test_clean_label_sets_pass():
    report = validate(frames())
    assert report.passed and failed(report) == {}, [r.observed for r in report.failures()]


def test_unknown_test_labels_and_bad_values_fail_with_an_example_row():
    data = frames()
    data["test"].at[3, "labels"] = ["earn", "copper"]
    data["train"].at[7, "labels"] = "earn"  # a string without data.label_separator
    report = validate(data)
    assert failed(report) == {("test", "labels_known"): "error", ("train", "label_format"): "error"}
    unknown = next(r for r in report.failures() if r.check == "labels_known")
    assert unknown.column == "labels" and unknown.examples[0]["row"] == 4
    assert unknown.examples[0]["[labels not in train]"] == "copper"
    bad = next(r for r in report.failures() if r.check == "label_format")
    assert bad.examples[0]["row"] == 8 and bad.examples[0]["labels"] == "earn"


def test_rows_without_a_label_are_reported_or_stop_the_run_as_configured():
    data = frames()
    data["train"].at[5, "labels"] = []
    assert failed(validate(data)) == {("train", "empty_labels"): "warning"}
    assert failed(validate(data, severity={"empty_labels": "error"})) == {("train", "empty_labels"): "error"}
    assert failed(validate(data, severity={"empty_labels": "off"})) == {}


def test_rare_labels_and_typos_are_flagged_on_train():
    data = frames()
    data["train"].at[9, "labels"] = ["acq", "gold"]  # one row of gold
    data["train"].at[10, "labels"] = ["Earn"]  # a case variant of earn
    report = validate(data, min_class_rows=3, min_class_rows_error=None)
    assert failed(report) == {("train", "class_rows"): "warning", ("train", "label_typos"): "error"}
    typo = next(r for r in report.failures() if r.check == "label_typos")
    assert "'Earn'" in typo.observed and typo.examples[0]["row"] == 11


def test_delimited_strings_are_checked_as_label_sets():
    data = {split: f.assign(labels=f["labels"].map("|".join)) for split, f in frames().items()}
    assert validate(data, separator="|").passed
    assert ("train", "label_format") in failed(validate(data))
