"""Every Great Expectations check fails on a bad dataset and passes on a clean one; severities."""

import json

import numpy as np
import pandas as pd
import pytest

from finetune_core.config.validation import CHECKS, ValidationConfig
from finetune_core.validation.report import markdown, table
from finetune_core.validation.suites import run_suites, token_counter_for

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def clean_frames(rows: int = 40) -> dict[str, pd.DataFrame]:
    texts = [f"{WORDS[i % 13]} {WORDS[(i // 13) % 13]} number {i}" for i in range(rows + 10)]
    labels = ["pos" if i % 2 else "neg" for i in range(rows + 10)]
    frame = pd.DataFrame({"sentence": texts, "label": labels})
    return {"train": frame.head(rows).reset_index(drop=True), "test": frame.tail(10).reset_index(drop=True)}


def regression_frames() -> dict[str, pd.DataFrame]:
    frames = clean_frames()
    return {s: f.assign(label=np.linspace(0, 1, len(f))) for s, f in frames.items()}


def validate(frames, task="classification", **settings):
    sources = {split: f"{split}.csv" for split in frames}
    counter = settings.pop("token_counter", None)
    return run_suites(frames, sources, ["sentence"], "label", task, ValidationConfig(**settings), token_counter=counter)


def failed(report) -> set[tuple[str, str]]:
    return {(r.split, r.check) for r in report.failures()}


def test_clean_classification_data_passes_every_check():
    report = validate(clean_frames())
    assert report.passed and failed(report) == set()
    checks = {r.check for r in report.results}
    assert checks == set(CHECKS) - {"text_tokens", "target_finite", "target_bounds", "label_format", "empty_labels"}


def test_clean_regression_data_passes_every_check():
    report = validate(regression_frames(), task="regression", target_min=0, target_max=1)
    assert report.passed and failed(report) == set()
    assert {"target_finite", "target_bounds"} <= {r.check for r in report.results}


def _set(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.at[row, column] = value
    return frame


def _bad(case: str) -> tuple[dict, dict, str]:
    """(frames, settings, task) failing exactly the named check."""
    f = clean_frames()
    if case == "columns":
        return {**f, "test": f["test"].drop(columns="label")}, {}, "classification"
    if case == "min_rows":
        return f, {"min_train_rows": 100}, "classification"
    if case == "text_not_blank":
        return {**f, "train": _set(_set(f["train"], 3, "sentence", "   "), 4, "sentence", None)}, {}, "classification"
    if case == "text_length":
        return {**f, "train": _set(f["train"], 5, "sentence", "x" * 500)}, {"max_text_chars": 100}, "classification"
    if case == "label_not_null":
        return {**f, "train": _set(f["train"], 6, "label", None)}, {}, "classification"
    if case in ("label_types", "label_typos"):  # ten rows of a numeric code / of a case variant among words
        first_ten = ["1" if case == "label_types" else "Pos"] * 10  # as many rows as pass the class size checks
        return {**f, "train": f["train"].assign(label=first_ten + list(f["train"]["label"][10:]))}, {}, "classification"
    if case == "labels_known":
        return {**f, "test": _set(f["test"], 1, "label", "neutral")}, {}, "classification"
    if case == "min_classes":
        return {s: frame.assign(label="pos") for s, frame in f.items()}, {}, "classification"
    if case == "class_rows":  # 2 of 40: below the error level (5 rows) and the warning level (10)
        labels = ["neg" if i < 2 else "pos" for i in range(40)]
        return {**f, "train": f["train"].assign(label=labels)}, {}, "classification"
    if case == "class_fraction":
        labels = ["neg" if i < 10 else "pos" for i in range(40)]  # 25 % negatives
        return {**f, "train": f["train"].assign(label=labels)}, {"min_class_fraction": 0.3}, "classification"
    if case == "duplicates":
        train = f["train"].copy()
        train.loc[20:35, "sentence"] = "  The SAME   text "  # case and whitespace differ, same normalised text
        train.loc[21, "sentence"] = "the same text"
        return {**f, "train": train}, {"max_duplicate_fraction": 0.1}, "classification"
    if case == "duplicates_stop":  # 4 texts copied 10 times: 90 % repeats, above the error level
        train = f["train"].assign(sentence=[f"text {i % 4}" for i in range(40)])
        return {**f, "train": train}, {}, "classification"
    if case == "leakage":
        leaked = f["train"]["sentence"][7].upper() + "  "
        return {**f, "test": _set(f["test"], 2, "sentence", leaked)}, {}, "classification"
    if case in ("label_format", "empty_labels"):  # multilabel: label sets written as JSON lists
        m = {s: frame.assign(label=frame["label"].map(lambda label: json.dumps([label]))) for s, frame in f.items()}
        return {**m, "train": _set(m["train"], 4, "label", "pos" if case == "label_format" else "[]")}, {}, "multilabel"
    r = regression_frames()
    if case == "target_finite":
        return {**r, "train": _set(_set(r["train"], 1, "label", "abc"), 2, "label", np.inf)}, {}, "regression"
    if case == "target_bounds":
        return {**r, "train": _set(r["train"], 3, "label", 5.0)}, {"target_min": 0, "target_max": 1}, "regression"
    raise AssertionError(case)


FAILING = [c for c in CHECKS if c != "text_tokens"]
# Bad datasets beyond a check's error level: every level of the check fails, the error stops the run.
PAST_ERROR_LEVEL = {"class_rows": "class_rows", "duplicates_stop": "duplicates"}


@pytest.mark.parametrize("case", [*FAILING, *PAST_ERROR_LEVEL])
def test_each_check_fails_on_its_bad_dataset(case):
    frames, settings, task = _bad(case)
    check = PAST_ERROR_LEVEL.get(case, case)
    report = validate(frames, task=task, **settings)
    assert {c for _, c in failed(report)} == {check}
    severities = {r.severity for r in report.failures()}
    if case in PAST_ERROR_LEVEL:
        assert severities == {"warning", "error"} and not report.passed
    else:
        assert severities == {ValidationConfig().severity_of(check)}
        assert report.passed == (ValidationConfig().severity_of(check) != "error")
    for failure in report.failures():
        assert failure.column in ("sentence", "label", None)  # the data's column, never a derived one
        if failure.unexpected_count:  # row-level checks show the offending rows
            assert failure.examples and all("row" in e for e in failure.examples)


def test_each_two_level_check_warns_at_its_warning_level_and_stops_at_its_error_level():
    frames, _, _ = _bad("duplicates_stop")  # 90 % repeats
    assert not validate(frames, max_duplicate_fraction=0.05, severity={"duplicates": "warning"}).passed  # the demo's
    assert validate(frames, max_duplicate_fraction_error=0.95).passed  # a warning only
    assert validate(frames, max_duplicate_fraction_error=None).passed  # null: never stops
    assert [r.severity for r in validate(frames, severity={"duplicates": "error"}).failures()] == ["error"]
    assert validate(frames, severity={"duplicates": "off"}).failures() == []
    assert validate(frames, max_duplicate_fraction=1.0).passed  # a looser warning level moves the error level
    frames, _, _ = _bad("class_fraction")  # 25 % negatives
    stopped = validate(frames, min_class_fraction=0.3, min_class_fraction_error=0.3)
    assert [r.severity for r in stopped.failures()] == ["error"] and not stopped.passed
    with pytest.raises(ValueError, match=r"max_duplicate_fraction_error \(0.01\) is below max_duplicate_fraction"):
        ValidationConfig(max_duplicate_fraction_error=0.01)
    with pytest.raises(ValueError, match=r"min_class_rows_error \(20\) is above min_class_rows"):
        ValidationConfig(min_class_rows_error=20)


def test_label_findings_name_the_labels_and_typo_examples_the_label_they_resemble():
    report = validate(_bad("label_types")[0])
    (failure,) = report.failures()
    assert failure.column == "label" and failure.unexpected_count == 10
    assert "numeric labels '1' (10 rows) mixed with word labels" in failure.observed
    assert [e["label"] for e in failure.examples] == ["1"] * 5
    (failure,) = validate(_bad("label_typos")[0]).failures()
    assert failure.observed == "'Pos' (10 rows) looks like 'pos' (15 rows)"
    assert failure.examples[0] == {
        "row": 1,
        "sentence": "alpha alpha number 0",
        "label": "Pos",
        "[looks like a typo of]": "pos",
    }


def test_leakage_example_names_the_test_row():
    frames, settings, _ = _bad("leakage")
    failure = validate(frames, **settings).failures()[0]
    assert failure.split == "test" and failure.unexpected_count == 1
    assert (
        failure.examples[0]["row"] == 3
        and failure.examples[0]["sentence"].strip().lower() == frames["train"]["sentence"][7]
    )


def test_token_length_check_uses_the_backbone_tokenizer(tiny_backbone):
    counter = token_counter_for(str(tiny_backbone))
    frames = clean_frames()
    assert validate(frames, max_text_tokens=64, token_counter=counter).passed
    long = {**frames, "train": _set(frames["train"], 0, "sentence", " ".join(WORDS * 3))}
    report = validate(long, max_text_tokens=10, token_counter=counter)
    assert failed(report) == {("train", "text_tokens")} and report.failures()[0].severity == "warning"


def test_severity_is_configurable_per_check():
    frames, _, _ = _bad("leakage")
    assert not validate(frames).passed
    as_warning = validate(frames, severity={"leakage": "warning"})
    assert as_warning.passed and as_warning.failures("warning")[0].check == "leakage"
    skipped = validate(frames, severity={"leakage": "off"})
    assert skipped.passed and "leakage" not in {r.check for r in skipped.results}
    with pytest.raises(ValueError, match="unknown check"):
        ValidationConfig(severity={"leakage_typo": "off"})


def test_reports_data_docs_json_markdown_and_table(tmp_path):
    frames, _, _ = _bad("leakage")
    report = run_suites(
        frames,
        {"train": "train.csv", "test": "test.csv"},
        ["sentence"],
        "label",
        "classification",
        ValidationConfig(),
        docs_dir=tmp_path / "docs",
    )
    assert report.data_docs and (tmp_path / "docs").joinpath(report.data_docs).exists()
    assert "finetune-test" in open(report.data_docs, encoding="utf-8").read()
    saved = json.loads(open(report.result_json, encoding="utf-8").read())
    assert {c["check"] for c in saved["checks"] if not c["success"]} == {"leakage"}
    assert set(saved["gx"]) == {"train", "test"}
    text = markdown(report)
    assert "FAILED" in text and "| **error** | test | leakage |" in text and "example rows" in text
    printed = table(report)
    assert printed.splitlines()[0].startswith("data validation FAILED") and "leakage" in printed


def _outcomes(report) -> list[tuple]:
    return [
        (
            r.split,
            r.check,
            r.severity,
            r.expectation,
            r.success,
            r.unexpected_count,
            None if r.unexpected_percent is None else round(r.unexpected_percent, 6),
            [e["row"] for e in r.examples],
        )
        for r in report.results
    ]


@pytest.mark.parametrize("check", ["clean", *FAILING, *PAST_ERROR_LEVEL])
def test_chunked_validation_of_parquet_files_equals_the_whole_split(check, tmp_path):
    """Large files are validated chunk by chunk (here 7 rows at a time: train 40 rows in 6
    chunks) straight from Parquet; whole-split checks (row count, duplicates, leakage, label
    set, class sizes and shares, label types and typos) count every chunk, so each check's
    verdict at each level, counts and example rows equal validating the whole split at once."""
    frames, settings, task = _bad(check) if check != "clean" else (clean_frames(), {}, "classification")
    if check == "target_finite":  # a column mixing text and numbers is text in a file
        frames["train"]["label"] = frames["train"]["label"].map(str)
    whole = validate(frames, task=task, **settings)
    paths = {}
    for split, frame in frames.items():
        paths[split] = str(tmp_path / f"{split}.parquet")
        frame.to_parquet(paths[split], index=False)
    chunked = validate(paths, task=task, chunk_rows=7, **settings)
    assert chunked.rows == whole.rows == {s: len(f) for s, f in frames.items()}
    assert _outcomes(chunked) == _outcomes(whole)

    def findings(report):  # what the label checks found is a whole-split fact: the same in words
        return [r.observed for r in report.failures() if r.check in ("label_types", "label_typos")]

    assert findings(chunked) == findings(whole)
