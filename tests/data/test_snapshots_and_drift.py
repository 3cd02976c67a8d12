"""Dated snapshots (newest complete one, fingerprint) and drift measures."""

import numpy as np
import pandas as pd
import pytest

from finetune_core.data.drift import compare, profile, profile_parquet
from finetune_core.data.prepare import LABEL, TEXT
from finetune_core.data.snapshots import newest_snapshot
from finetune_core.errors import DataError


def _write(folder, files):
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_newest_complete_snapshot_and_its_fingerprint(tmp_path):
    _write(tmp_path / "2026-11-26", {"train.csv": "sentence,label\na,1\n", "test.csv": "sentence,label\nb,0\n"})
    _write(
        tmp_path / "2026-11-27",
        {
            "train.tsv": "sentence\tlabel\nc\t1\n",
            "test.tsv": "sentence\tlabel\nd\t0\n",
            "validation.tsv": "sentence\tlabel\ne\t1\n",
        },
    )
    _write(tmp_path / "2026-11-28", {"train.csv": "sentence,label\nonly train,1\n"})  # incomplete: ignored
    snapshot = newest_snapshot(tmp_path)
    assert snapshot.name == "2026-11-27" and set(snapshot.files) == {"train", "validation", "test"}
    before = snapshot.fingerprint
    (tmp_path / "2026-11-27" / "test.tsv").write_text("sentence\tlabel\nd\t1\n")
    assert newest_snapshot(tmp_path).fingerprint != before
    with pytest.raises(DataError, match="no snapshot directory holds both a train and a test file"):
        newest_snapshot(tmp_path / "2026-11-28")
    with pytest.raises(DataError, match="incoming data directory not found"):
        newest_snapshot(tmp_path / "nope")


def test_drift_of_labels_and_text_lengths():
    texts = pd.Series(["short text"] * 50 + ["a somewhat longer text that goes on for a while"] * 50)
    labels = pd.Series(["pos"] * 50 + ["neg"] * 50)
    reference = profile(texts, labels, "classification")
    same = compare(reference, profile(texts, labels, "classification"), 0.2, 0.25)
    assert same.label_distance == 0 and same.length_psi == pytest.approx(0, abs=1e-9) and not same.drifted
    skewed = compare(reference, profile(texts, pd.Series(["pos"] * 90 + ["neg"] * 10), "classification"), 0.2, 0.25)
    assert skewed.label_distance == pytest.approx(0.4) and skewed.drifted
    longer = compare(reference, profile(texts.str.repeat(20), labels, "classification"), 0.2, 0.25)
    assert longer.length_psi > 1 and longer.drifted and "text length PSI" in longer.summary()
    numbers = profile(texts, pd.Series(range(100)).astype(float), "regression")
    shifted = compare(numbers, profile(texts, pd.Series(range(100)).astype(float) + 29, "regression"), 0.2, 0.25)
    assert shifted.label_distance == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_profile_read_in_chunks_is_the_profile_of_the_whole_split(tmp_path, task):
    rng = np.random.default_rng(0)
    texts = ["x" * int(n) for n in rng.integers(0, 3000, 1000)]  # every length bin
    if task == "classification":  # class 3 never occurs; classes 0 and 1 tie
        labels, names = np.repeat([0, 1, 2], [400, 400, 200]).astype(np.int64), ["a", "b", "c", "d"]
        rng.shuffle(labels)
    else:  # arbitrary floats: a mean summed chunk by chunk would differ in the last bits
        labels, names = rng.normal(3.0, 2.0, 1000), None
    frame = pd.DataFrame({TEXT: texts, LABEL: labels})
    path = tmp_path / "train.parquet"
    frame.to_parquet(path, index=False)
    whole = profile(frame[TEXT], frame[LABEL].map(lambda i: names[i]) if names else frame[LABEL], task)
    chunked = profile_parquet(path, names, task, rows=64)
    assert chunked == whole and list(chunked.labels) == list(whole.labels)
    assert all(whole.lengths) and chunked.rows == 1000
