"""Sentence pairs (`data.text_pair_column`): tokenised as the tokenizer's own pair encoding,
prepared with both texts, validated on both texts, duplicates and leakage decided on the pair."""

import numpy as np
import pandas as pd
import pytest

from finetune_core.config.loading import validate_config
from finetune_core.config.validation import ValidationConfig
from finetune_core.data.drift import profile_parquet
from finetune_core.data.prepare import TEXT, TEXT_PAIR, prepare_splits
from finetune_core.errors import DataError
from finetune_core.metrics.scores import regression_metrics
from finetune_core.model.batching import collate, encode, encode_columns
from finetune_core.model.features import texts_digest
from finetune_core.model.tokenized import encode_file
from finetune_core.validation.suites import run_suites

FIRST = ["a gorgeous witty film", "a dull mess", "the plot is thin but the acting is fine", "good"]
SECOND = ["a witty and gorgeous film", "the film is dull", "fine acting", "bad " * 40]


@pytest.fixture
def tokenizer(tiny_backbone):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_backbone)


def pair_frame(rows: int = 40, seed: int = 0) -> pd.DataFrame:
    words = "good bad film plot acting fine dull witty thin mess story cast score".split()
    rng = np.random.default_rng(seed)
    first = [" ".join(rng.choice(words, 5)) + f" {i}" for i in range(rows)]
    second = [" ".join(rng.choice(words, 4)) + f" {i}" for i in range(rows)]
    return pd.DataFrame({"s1": first, "s2": second, "label": [i % 2 for i in range(rows)]})


def pair_config(tmp_path, **data):
    return validate_config(
        {
            "data": {
                "train": str(tmp_path / "train.csv"),
                "test": str(tmp_path / "test.csv"),
                "text_column": "s1",
                "text_pair_column": "s2",
                **data,
            }
        }
    )


def test_pair_encoding_is_the_tokenizers_own(tokenizer):
    expected = tokenizer(FIRST, SECOND, truncation="longest_first", max_length=16)
    encoded = encode_columns(tokenizer, [FIRST, SECOND], 16)
    assert encoded.input_ids == expected["input_ids"] and encoded.token_type_ids == expected["token_type_ids"]
    assert max(len(ids) for ids in encoded.input_ids) == 16  # the long second text was cut, the first kept
    batch = collate(encoded, [0, 3])
    assert batch["token_type_ids"][1].tolist() == expected["token_type_ids"][3]
    assert encode(tokenizer, FIRST, 16).token_type_ids is None  # single texts: as before
    assert texts_digest(encoded) != texts_digest(encode(tokenizer, FIRST, 16))


def test_prepared_pairs_keep_both_texts_and_token_files_match(tmp_path, tokenizer):
    pair_frame(40, 0).to_csv(tmp_path / "train.csv", index=False)
    pair_frame(20, 1).to_csv(tmp_path / "test.csv", index=False)
    prepared = prepare_splits(pair_config(tmp_path), tmp_path / "data")
    test = prepared.frame("test")
    assert prepared.text_columns == {TEXT: "s1", TEXT_PAIR: "s2"} and list(test.columns) == [TEXT, TEXT_PAIR, "label"]
    from_file = encode_file(tokenizer, prepared.paths["test"], 12, tmp_path / "tokens")
    in_memory = encode_columns(tokenizer, [test[TEXT].tolist(), test[TEXT_PAIR].tolist()], 12)
    assert [list(row) for row in from_file.input_ids] == in_memory.input_ids
    assert [list(row) for row in from_file.token_type_ids] == in_memory.token_type_ids
    assert profile_parquet(prepared.paths["test"], prepared.labels, "classification").rows == 20


def test_a_missing_pair_column_names_the_file_and_column(tmp_path):
    pair_frame(40).drop(columns=["s2"]).to_csv(tmp_path / "train.csv", index=False)
    pair_frame(20).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv: column 's2' not found"):
        prepare_splits(pair_config(tmp_path), tmp_path / "data")


def validate_pairs(frames):
    sources = {split: f"{split}.csv" for split in frames}
    config = ValidationConfig(max_duplicate_fraction=0.0)  # any repeated row is reported
    return run_suites(frames, sources, ["s1", "s2"], "label", "classification", config)


def test_duplicates_and_leakage_are_decided_on_the_pair():
    train, test = pair_frame(40, 0), pair_frame(10, 1)
    assert validate_pairs({"train": train, "test": test}).passed
    same_first = train.copy()
    same_first.loc[5, "s1"] = same_first.loc[4, "s1"]  # same first text, another second text: not a duplicate
    test_same_first = test.copy()
    test_same_first.loc[2, "s1"] = train.loc[7, "s1"]  # not a leak either
    assert validate_pairs({"train": same_first, "test": test_same_first}).passed
    repeated, leaked = train.copy(), test.copy()
    repeated.loc[5, ["s1", "s2"]] = repeated.loc[4, ["s1", "s2"]].to_numpy()
    leaked.loc[2, ["s1", "s2"]] = [train.loc[7, "s1"].upper(), train.loc[7, "s2"] + "  "]  # normalised: the same
    report = validate_pairs({"train": repeated, "test": leaked})
    found = {(r.split, r.check): r for r in report.failures()}
    assert {("train", "duplicates"), ("test", "leakage")} <= set(found)
    assert found["test", "leakage"].examples[0]["row"] == 3 and "s2" in found["test", "leakage"].examples[0]


def test_a_blank_pair_text_fails_validation_naming_column_and_row():
    train = pair_frame(40, 0)
    train.loc[6, "s2"] = "   "
    report = validate_pairs({"train": train, "test": pair_frame(10, 1)})
    blank = [r for r in report.failures("error") if r.check == "text_not_blank"]
    assert blank and blank[0].column == "s2" and blank[0].examples[0]["row"] == 7  # 1-based data row


def test_regression_reports_pearson_and_spearman():
    targets = np.array([0.0, 1.0, 2.0, 3.0])
    metrics = regression_metrics(targets, np.array([0.1, 0.9, 2.5, 2.9]))
    assert {"mse", "mae", "r2", "pearson", "spearman"} == set(metrics)
    assert metrics["spearman"] == pytest.approx(1.0) and 0.9 < metrics["pearson"] < 1.0
