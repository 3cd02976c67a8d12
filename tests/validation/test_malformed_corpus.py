"""The malformed datasets that used to train and become champion are stopped by `finetune validate`
(exit 2, naming the column) on the DEFAULT validation settings: a configuration that sets
only the data paths. The shipped demo data still passes."""

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import SST2

runner = CliRunner()
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def texts(rows: int, prefix: str) -> list[str]:
    return [f"{prefix} {WORDS[i % 13]} {WORDS[(i // 13) % 13]} number {i}" for i in range(rows)]


def corpus(case: str) -> pd.DataFrame:
    """A 300-row (400 for duplicates) training file with one defect."""
    if case == "mixed_label_types":  # 0 and 1, and every fourth row a word
        labels = ["pos" if i % 4 == 3 else str(i % 2) for i in range(300)]
        return pd.DataFrame({"sentence": texts(300, "review"), "label": labels})
    if case == "typo_label":  # 6 rows of "postive" among 147 "positive"
        labels = ["postive" if i < 6 else ("positive" if i % 2 else "negative") for i in range(300)]
        return pd.DataFrame({"sentence": texts(300, "review"), "label": labels})
    if case == "duplicates_95_percent":  # 20 unique texts x 20
        unique = texts(20, "review")
        return pd.DataFrame({"sentence": unique * 20, "label": [str(i % 2) for i in range(20)] * 20})
    if case == "class_of_2_in_300":
        labels = ["neutral" if i < 2 else ("pos" if i % 2 else "neg") for i in range(300)]
        return pd.DataFrame({"sentence": texts(300, "review"), "label": labels})
    raise AssertionError(case)


# case -> (the check that stops it, the column it names)
CASES = {
    "mixed_label_types": ("label_types", "label"),
    "typo_label": ("label_typos", "label"),
    "duplicates_95_percent": ("duplicates", "sentence"),
    "class_of_2_in_300": ("class_rows", "label"),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_training_data_exits_2_naming_the_check_and_column(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default report directory (runs/validation-<time>) lands here
    train = corpus(case)
    train.to_csv(tmp_path / "train.csv", index=False)
    labels = sorted(set(train["label"]) - {"postive", "neutral"})
    test = pd.DataFrame({"sentence": texts(40, "held out"), "label": [labels[i % len(labels)] for i in range(40)]})
    test.to_csv(tmp_path / "test.csv", index=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"train": "train.csv", "test": "test.csv"}}))

    result = runner.invoke(app, ["validate", str(config)])

    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("data validation FAILED")
    check, column = CASES[case]
    (row,) = [line for line in lines if line.startswith("error") and f" {check} " in line]
    assert "train (train.csv)" in row and f" {column} " in row


def test_the_shipped_demo_data_passes_the_default_checks():
    """The demo sample has no duplicate text and two classes of ~900 and ~1100 rows: far from any
    level (5 % duplicates, 10 rows per class), so validating it on the defaults passes, warning-free."""
    from finetune_core.config.validation import ValidationConfig
    from finetune_core.validation.suites import run_suites

    frames = {
        split: pd.read_csv(SST2 / f"{split}.tsv", sep="\t", quoting=3, keep_default_na=False)
        for split in ("train", "test")
    }
    report = run_suites(
        frames, {s: f"{s}.tsv" for s in frames}, ["sentence"], "label", "classification", ValidationConfig()
    )
    assert report.passed and report.failures() == [], [(r.split, r.check, r.observed) for r in report.failures()]
