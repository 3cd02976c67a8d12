"""`finetune review-labels CONFIG`: data preparation, frozen features and the label review only;
prints the most suspect rows, writes the CSV, exits 0 at the warning level and 2 when the error
level is exceeded."""

import subprocess
import sys

import pandas as pd
import yaml

from tests.conftest import tiny_config
from tests.datasets import easy_sentiment

PLANTED = [3, 10, 17, 24, 31, 38, 45, 52, 59, 66]


def _review(config: dict, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "flows.cli", "review-labels", str(path), "--out-dir", str(tmp_path / "out")]
    return subprocess.run([*command, *extra], cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_review_labels_prints_writes_and_exits_by_level(tiny_backbone, tmp_path):
    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    train = easy_sentiment(240, 0)
    train.loc[PLANTED, "label"] = 1 - train.loc[PLANTED, "label"]
    train.to_csv(files["train"], index=False)
    easy_sentiment(40, 1).to_csv(files["test"], index=False)
    config = tiny_config(tiny_backbone, files, f"sqlite:///{tmp_path / 'unused.db'}", tmp_path)
    config["data"]["validation"] = str(files["test"])  # train rows stay in file order
    config["backbone"]["pooling"] = "mean"  # the tiny random BERT's features then separate the classes
    config["training"]["frozen"]["regularization"] = 100.0

    warned = _review(config, tmp_path)
    assert warned.returncode == 0, warned.stderr
    suspects = pd.read_csv(tmp_path / "out" / "review" / "suspect_labels.csv")
    assert len(set(suspects["row"]) & set(PLANTED)) >= 7
    assert "suspect labels" in warned.stdout and str(suspects.iloc[0]["text"])[:20] in warned.stdout
    assert "look wrong to confident learning" in warned.stderr
    assert not (tmp_path / "unused.db").exists()  # nothing tracked

    strict = ["--set", "validation.suspect_labels=error", "--set", "validation.max_suspect_label_fraction=0.01"]
    stopped = _review(config, tmp_path, *strict)
    assert stopped.returncode == 2 and "above validation.max_suspect_label_fraction 0.01" in stopped.stderr
