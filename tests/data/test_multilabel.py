"""Multilabel labels: parsed from list columns, lists written as text, or delimited strings; encoded as
label ids; bad values are DataErrors naming the file, column and row; positive weights from train."""

import json

import numpy as np
import pandas as pd
import pytest

from finetune_core.config.loading import validate_config
from finetune_core.data.checks import basic_checks
from finetune_core.data.multilabel import label_matrix, parse_labels, pos_weight_vector
from finetune_core.data.prepare import LABEL, prepare_splits
from finetune_core.errors import ConfigError, DataError

TOPICS = ["grain", "wheat", "earn", "acq"]


def rows(count: int, offset: int = 0) -> list[dict]:
    """Texts with one or two topics; every 5th row has two (grain + wheat)."""
    out = []
    for i in range(offset, offset + count):
        labels = ["grain", "wheat"] if i % 5 == 0 else [TOPICS[i % 4]]
        out.append({"text": f"story number {i} about {' and '.join(labels)}", "labels": labels})
    return out


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def config_for(tmp_path, train, test, **data):
    raw = {
        "task": "multilabel",
        "data": {"train": train, "test": test, "text_column": "text", "label_column": "labels", **data},
        "validation": {"enabled": False},
    }
    return validate_config(raw)


@pytest.mark.parametrize(
    "value, separator, expected",
    [
        (["earn", "acq"], None, ["earn", "acq"]),
        (np.array(["earn", "earn"]), None, ["earn"]),  # duplicates once
        ([], None, []),
        ('["earn", "acq"]', None, ["earn", "acq"]),  # a JSON list written as text (a CSV cell)
        ("['earn']", None, ["earn"]),  # as pandas writes a Python list
        ("earn|acq", "|", ["earn", "acq"]),
        ("", "|", []),
        ([1, 2.0], None, ["1", "2"]),
    ],
)
def test_label_sets_parse_from_lists_text_and_delimited_strings(value, separator, expected):
    assert parse_labels(value, separator) == expected


@pytest.mark.parametrize("value", ["earn", 3, None, float("nan"), ["earn", None], ["earn", " "]])
def test_values_that_are_not_label_lists_say_why(value):
    assert isinstance(parse_labels(value, None), str)


def test_prepared_splits_hold_label_ids_and_train_counts(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows(60))
    test = write_jsonl(tmp_path / "test.jsonl", rows(20, offset=100))
    config = config_for(tmp_path, train, test)
    prepared = prepare_splits(config, tmp_path / "data")
    assert prepared.task == "multilabel" and prepared.labels == sorted(TOPICS)
    frame = prepared.frame("test")
    first = [prepared.labels[i] for i in frame[LABEL].iloc[0]]
    assert first == ["grain", "wheat"]  # row 100: two topics, as ids of the sorted label names
    summary = basic_checks(prepared, config)
    assert sum(summary["train_label_counts"].values()) > prepared.rows["train"]  # rows with two labels
    assert config.training.metric is None and config.task == "multilabel"


def test_a_delimited_string_column_needs_and_uses_the_separator(tmp_path):
    for split, records in (("train", rows(40)), ("test", rows(10, 50))):
        frame = pd.DataFrame(records).assign(labels=lambda f: f["labels"].map("|".join))
        frame.to_csv(tmp_path / f"{split}.csv", index=False)
    train, test = str(tmp_path / "train.csv"), str(tmp_path / "test.csv")
    prepared = prepare_splits(config_for(tmp_path, train, test, label_separator="|"), tmp_path / "a")
    matrix = label_matrix(prepared.frame("train")[LABEL].to_numpy(), len(prepared.labels))
    assert matrix.sum(axis=1).max() == 2 and prepared.labels == sorted(TOPICS)
    with pytest.raises(DataError, match=r"train\.csv: column 'labels', data row 1: 'grain\|wheat' is not a list"):
        prepare_splits(config_for(tmp_path, train, test), tmp_path / "b")


def test_a_bad_label_value_names_file_column_and_row(tmp_path):
    records = rows(30)
    records[11]["labels"] = 7
    train = write_jsonl(tmp_path / "train.jsonl", records)
    test = write_jsonl(tmp_path / "test.jsonl", rows(10, 40))
    with pytest.raises(DataError, match=r"train\.jsonl: column 'labels', data row 12: '7' is not a list of labels"):
        prepare_splits(config_for(tmp_path, train, test), tmp_path / "data")


def test_a_test_label_never_seen_in_train_names_its_row(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows(30))
    tests = rows(10, 40)
    tests[3]["labels"] = ["earn", "copper"]
    test = write_jsonl(tmp_path / "test.jsonl", tests)
    with pytest.raises(DataError, match=r"test\.jsonl: column 'labels', data row 4: label\(s\) \['copper'\] not seen"):
        prepare_splits(config_for(tmp_path, train, test), tmp_path / "data")


def test_multilabel_settings_are_checked_against_the_task(tmp_path):
    base = {"train": "a.csv", "test": "b.csv"}
    with pytest.raises(ConfigError, match="pos_weight needs task multilabel"):
        validate_config({"data": base, "training": {"pos_weight": "balanced"}})
    with pytest.raises(ConfigError, match="label_separator needs task multilabel"):
        validate_config({"data": {**base, "label_separator": "|"}})
    with pytest.raises(ConfigError, match="multilabel: training.pos_weight"):
        validate_config({"task": "multilabel", "data": base, "training": {"class_weights": "balanced"}})
    with pytest.raises(ConfigError, match="not a metric of task multilabel"):
        validate_config({"task": "multilabel", "data": base, "training": {"metric": "accuracy"}})
    with pytest.raises(ConfigError, match="pos_weight names label"):
        train = write_jsonl(tmp_path / "train.jsonl", rows(20))
        test = write_jsonl(tmp_path / "test.jsonl", rows(5, 30))
        config = config_for(tmp_path, train, test)
        config = config.model_copy(update={"training": config.training.model_copy(update={"pos_weight": {"gold": 2}})})
        prepare_splits(config, tmp_path / "data")


def test_balanced_positive_weights_are_negatives_over_positives_capped():
    train = label_matrix([[0], [0, 1], [0], [0]], 3)  # label 0: 4 of 4, label 1: 1 of 4, label 2: none
    weights = pos_weight_vector("balanced", ["a", "b", "c"], train)
    assert weights.tolist() == [0.0, 3.0, 1.0]
    assert pos_weight_vector("balanced", ["a", "b", "c"], train, cap=2.0).tolist() == [0.0, 2.0, 1.0]
    assert pos_weight_vector({"b": 5.0}, ["a", "b", "c"], train).tolist() == [1.0, 5.0, 1.0]
    assert pos_weight_vector("none", ["a"], train) is None


def test_drift_profiles_count_each_label_of_each_row(tmp_path):
    from finetune_core.data.drift import profile_parquet

    train = write_jsonl(tmp_path / "train.jsonl", rows(40))
    test = write_jsonl(tmp_path / "test.jsonl", rows(10, 50))
    config = config_for(tmp_path, train, test, validation_fraction=0.5)
    prepared = prepare_splits(config, tmp_path / "data")
    profile = profile_parquet(prepared.paths["train"], prepared.labels, "multilabel")
    assert set(profile.labels) == set(TOPICS) and np.isclose(sum(profile.labels.values()), 1.0)
    delimited = pd.DataFrame(rows(40)).assign(labels=lambda f: f["labels"].map("|".join))
    delimited.to_parquet(tmp_path / "raw.parquet")
    raw = profile_parquet(tmp_path / "raw.parquet", None, "multilabel", texts=["text"], label="labels", separator="|")
    assert np.isclose(raw.labels["wheat"], 16 / 48)  # 40 rows, 8 with two labels (grain, wheat): 48 in all
