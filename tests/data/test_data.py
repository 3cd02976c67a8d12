import json

import pandas as pd
import pytest

from finetune_core.config.loading import validate_config
from finetune_core.data.checks import basic_checks
from finetune_core.data.prepare import LABEL, TEXT, prepare_splits
from finetune_core.errors import DataError
from tests.tables import read_table

TRAIN = pd.DataFrame(
    {
        "review": [f"text number {i} {'good' if i % 3 else 'bad'}" for i in range(60)],
        "sentiment": ["pos" if i % 3 else "neg" for i in range(60)],
    }
)


def write(frame: pd.DataFrame, path):
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")) + "\n")
    else:
        frame.to_parquet(path, index=False)
    return path


def config_for(train, test, **data):
    return validate_config(
        {"data": {"train": str(train), "test": str(test), "text_column": "review", "label_column": "sentiment", **data}}
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_loads_with_string_labels(tmp_path, suffix):
    train = write(TRAIN, tmp_path / f"train{suffix}")
    test = write(TRAIN.head(20), tmp_path / f"test{suffix}")
    prepared = prepare_splits(config_for(train, test), tmp_path / "out")
    assert prepared.labels == ["neg", "pos"]
    # 6 validation rows, too few of one class to decide anything (MIN_VALIDATION_ROWS_PER_CLASS): they train too
    assert prepared.rows == {"train": 60, "validation": 6, "test": 20} and prepared.validation_in_train
    frame = prepared.frame("test")
    assert list(frame.columns) == [TEXT, LABEL]
    assert frame[LABEL].tolist() == [0 if s == "neg" else 1 for s in TRAIN.head(20)["sentiment"]]


def test_integer_labels_sort_numerically(tmp_path):
    frame = TRAIN.assign(sentiment=[i % 11 for i in range(60)])
    train = write(frame, tmp_path / "train.csv")
    prepared = prepare_splits(config_for(train, train), tmp_path / "out")
    assert prepared.labels == [str(i) for i in range(11)]  # 10 after 9, not after 1


def test_quotes_in_tsv_are_ordinary_characters(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('review\tsentiment\n"a quoted" start\tpos\nit \'s "fine\tneg\n')
    frame = read_table(path)
    assert frame["review"].tolist() == ['"a quoted" start', "it 's \"fine"]


def test_validation_split_is_stratified_and_seeded(tmp_path):
    train = write(TRAIN, tmp_path / "train.csv")
    first = prepare_splits(config_for(train, train, validation_fraction=0.25), tmp_path / "a")
    again = prepare_splits(config_for(train, train, validation_fraction=0.25), tmp_path / "b")
    validation = first.frame("validation")
    assert validation.equals(again.frame("validation")) and first.fingerprint == again.fingerprint
    assert validation[LABEL].mean() == pytest.approx(TRAIN["sentiment"].eq("pos").mean(), abs=0.05)
    assert not set(validation[TEXT]) & set(first.frame("train")[TEXT])


def test_max_train_samples_subsamples_after_the_split(tmp_path):
    train = write(TRAIN, tmp_path / "train.csv")
    prepared = prepare_splits(config_for(train, train, max_train_samples=10), tmp_path / "out")
    assert prepared.rows["train"] == 10 and prepared.rows["validation"] == 6


def test_explicit_validation_file_is_used(tmp_path):
    train = write(TRAIN, tmp_path / "train.csv")
    validation = write(TRAIN.tail(7), tmp_path / "validation.csv")
    prepared = prepare_splits(config_for(train, train, validation=str(validation)), tmp_path / "out")
    assert prepared.rows == {"train": 60, "validation": 7, "test": 60}


def test_missing_file_is_named(tmp_path):
    train = write(TRAIN, tmp_path / "train.csv")
    with pytest.raises(DataError, match=r"data file not found: .*nope\.csv"):
        prepare_splits(config_for(train, tmp_path / "nope.csv"), tmp_path / "out")


def test_missing_column_names_file_and_column(tmp_path):
    train = write(TRAIN.rename(columns={"sentiment": "stars"}), tmp_path / "train.csv")
    with pytest.raises(DataError, match=r"train\.csv: column 'sentiment' not found \(columns: review, stars\)"):
        prepare_splits(config_for(train, train), tmp_path / "out")


def test_unknown_test_label_is_named(tmp_path):
    train = write(TRAIN, tmp_path / "train.csv")
    test = write(TRAIN.head(5).assign(sentiment="neutral"), tmp_path / "test.csv")
    with pytest.raises(DataError, match=r"test\.csv: column 'sentiment' has labels not seen in train: \['neutral'\]"):
        prepare_splits(config_for(train, test), tmp_path / "out")


def test_regression_targets(tmp_path):
    frame = TRAIN.assign(sentiment=[i / 10 for i in range(60)])
    train = write(frame, tmp_path / "train.csv")
    config = config_for(train, train)
    config.task = "regression"
    prepared = prepare_splits(config, tmp_path / "out")
    assert prepared.labels is None
    assert prepared.target_mean == pytest.approx(prepared.frame("train")[LABEL].mean())
    bad = write(frame.assign(sentiment=["x"] + [1.0] * 59), tmp_path / "bad.csv")
    config.data.train = bad
    with pytest.raises(DataError, match=r"bad\.csv: column 'sentiment' has a non-numeric target 'x' in data row 1"):
        prepare_splits(config, tmp_path / "out2")


def test_basic_checks_reject_blank_text_and_single_class(tmp_path):
    blank = TRAIN.copy()
    blank.loc[3, "review"] = "   "
    train = write(blank, tmp_path / "train.csv")
    config = config_for(train, train)
    with pytest.raises(DataError, match=r"column 'review' is empty in 1 row\(s\) of the (train|validation) split"):
        basic_checks(prepare_splits(config, tmp_path / "out"), config)
    single = write(TRAIN.assign(sentiment="pos"), tmp_path / "single.csv")
    config = config_for(single, single)
    with pytest.raises(DataError, match="fewer than 2 classes"):
        basic_checks(prepare_splits(config, tmp_path / "out3"), config)


def test_basic_checks_summarise_classes(tmp_path):
    train = write(TRAIN, tmp_path / "train.csv")
    config = config_for(train, train)
    summary = basic_checks(prepare_splits(config, tmp_path / "out"), config)
    assert summary["train_class_counts"] == {"neg": 20, "pos": 40}  # 6 validation rows (2 neg) train too


@pytest.mark.parametrize("validation_file", [False, True])
def test_preparing_in_small_chunks_writes_the_same_splits(tmp_path, monkeypatch, validation_file):
    """Splits are streamed PREPARE_ROWS at a time; 7-row chunks give the same files as one chunk,
    and errors still name the row of the file."""
    import finetune_core.data.prepare as data

    train = write(TRAIN, tmp_path / "train.csv")
    extra = {"validation": str(write(TRAIN.tail(9), tmp_path / "validation.csv"))} if validation_file else {}
    whole = prepare_splits(config_for(train, train, max_train_samples=30, **extra), tmp_path / "whole")
    monkeypatch.setattr(data, "PREPARE_ROWS", 7)
    chunked = prepare_splits(config_for(train, train, max_train_samples=30, **extra), tmp_path / "chunked")
    assert chunked.rows == whole.rows and chunked.fingerprint == whole.fingerprint
    for split in data.SPLITS:
        assert chunked.frame(split).equals(whole.frame(split))
    bad = write(TRAIN.assign(sentiment=[1.0] * 19 + ["x"] + [1.0] * 40), tmp_path / "bad.csv")
    config = config_for(bad, train)
    config.task = "regression"
    with pytest.raises(DataError, match=r"bad\.csv: column 'sentiment' has a non-numeric target 'x' in data row 20"):
        prepare_splits(config, tmp_path / "bad")


def test_seeded_sample_is_exact_stratified_and_seeded():
    import numpy as np

    from finetune_core.data.sampling import seeded_sample

    labels = np.array([0] * 700 + [1] * 250 + [2] * 50)
    chosen = seeded_sample(labels, len(labels), 101, seed=3)
    assert len(chosen) == len(set(chosen)) == 101 and list(chosen) == sorted(chosen)
    assert np.bincount(labels[chosen]).tolist() == [71, 25, 5]  # 70.7, 25.25, 5.05: the remainder to class 0
    assert (seeded_sample(labels, len(labels), 101, seed=3) == chosen).all()
    assert (seeded_sample(labels, len(labels), 101, seed=4) != chosen).any()
    plain = seeded_sample(None, 1000, 10, seed=0)
    assert len(set(plain)) == 10 and plain.max() < 1000


def test_repeats_are_flagged_after_their_first_occurrence():

    from finetune_core.validation.split_facts import normalise, repeats_earlier, text_hashes

    texts = pd.Series(["b", "A  a", "c", "a a", "", "b", None, "", "c"])
    keys = normalise(texts)
    flags = repeats_earlier(text_hashes(keys), (keys == "").to_numpy())
    assert flags.tolist() == (keys.duplicated() & (keys != "")).tolist()
    assert flags.tolist() == [False, False, False, True, False, True, False, False, True]
