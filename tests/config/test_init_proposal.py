"""`finetune init`'s guess of the columns and task (finetune_core.data.schema_guess) and the
configuration it writes (finetune_core.config.init_proposal), on small frames and files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from finetune_core.config.init_proposal import render_config
from finetune_core.config.loading import validate_config
from finetune_core.data.schema_guess import CannotDecide, guess_schema, read_sample
from finetune_core.errors import DataError

WORDS = ["the", "film", "story", "was", "a", "quiet", "loud", "river", "town", "night", "plan", "long", "short"]
TOPICS = ["earn", "acq", "grain", "crude"]


def sentences(n: int, seed: int) -> list[str]:
    """``n`` different sentences; another seed gives other sentences (no test row repeats a train row)."""
    rng = np.random.default_rng(seed)
    return [f"item {seed}-{i} " + " ".join(rng.choice(WORDS, size=6)) for i in range(n)]


def single_text(n: int = 60, seed: int = 0, labels=("positive", "negative")) -> pd.DataFrame:
    return pd.DataFrame({"review": sentences(n, seed), "sentiment": [labels[i % len(labels)] for i in range(n)]})


def pairs(n: int = 60, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "question1": sentences(n, seed),
            "question2": sentences(n, seed + 100),
            "is_duplicate": [i % 2 for i in range(n)],
        }
    )


def regression(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"text": sentences(n, seed), "score": np.round(rng.uniform(0, 5, size=n), 2)})


def multilabel_lists(n: int = 60, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"text": sentences(n, seed), "topics": [TOPICS[i % 4 : i % 4 + 1 + i % 2] for i in range(n)]})


def multilabel_joined(n: int = 60, seed: int = 0, separator: str = "|") -> pd.DataFrame:
    frame = multilabel_lists(n, seed)
    return frame.assign(topics=frame["topics"].map(separator.join))


# Each kind of data: how to build it, the file type it is written as, and what init must decide.
KINDS = {
    "single-text": (single_text, "csv", {"task": "classification", "text_column": "review"}),
    "pairs": (pairs, "tsv", {"task": "classification", "text_column": "question1", "text_pair_column": "question2"}),
    "regression": (regression, "csv", {"task": "regression", "text_column": "text", "label_column": "score"}),
    "multilabel": (multilabel_lists, "jsonl", {"task": "multilabel", "label_column": "topics"}),
}


def write(frame: pd.DataFrame, path):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in frame.to_dict("records")))
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


def test_single_texts_with_string_labels():
    proposal = guess_schema(single_text())
    assert (proposal.text_column, proposal.label_column, proposal.task) == ("review", "sentiment", "classification")
    assert proposal.text_pair_column is None and proposal.label_separator is None
    assert "2 distinct strings" in proposal.reasons["task"]
    assert "only text column" in proposal.reasons["data.text_column"]


def test_integer_labels_unnamed_are_classes():
    frame = single_text().assign(sentiment=[i % 3 for i in range(60)]).rename(columns={"sentiment": "stars_given"})
    proposal = guess_schema(frame)
    assert (proposal.label_column, proposal.task) == ("stars_given", "classification")
    assert "only column that looks like labels" in proposal.reasons["data.label_column"]
    assert "3 distinct whole numbers" in proposal.reasons["task"]


def test_two_text_columns_are_a_pair_in_the_order_their_names_say():
    proposal = guess_schema(pairs())
    assert (proposal.text_column, proposal.text_pair_column, proposal.label_column) == (
        "question1",
        "question2",
        "is_duplicate",
    )
    swapped = pd.DataFrame({"hypothesis": sentences(40, 1), "premise": sentences(40, 2), "label": ["yes", "no"] * 20})
    proposal = guess_schema(swapped)
    assert (proposal.text_column, proposal.text_pair_column) == ("premise", "hypothesis")
    assert "sentence pairs" in proposal.reasons["data.text_pair_column"]


def test_many_distinct_fractional_numbers_are_a_regression_target():
    proposal = guess_schema(regression())
    assert (proposal.task, proposal.label_column) == ("regression", "score")
    assert "a target rather than classes" in proposal.reasons["task"]


def test_lists_in_jsonl_are_multilabel(tmp_path):
    sample = read_sample(write(multilabel_lists(), tmp_path / "train.jsonl"))
    proposal = guess_schema(sample)
    assert (proposal.task, proposal.label_column, proposal.label_separator) == ("multilabel", "topics", None)
    assert "lists of labels" in proposal.reasons["task"]


def test_lists_in_parquet_and_lists_written_as_text_in_csv_are_multilabel(tmp_path):
    assert guess_schema(read_sample(write(multilabel_lists(), tmp_path / "train.parquet"))).task == "multilabel"
    as_text = multilabel_lists().assign(topics=lambda f: f["topics"].map(json.dumps))
    proposal = guess_schema(read_sample(write(as_text, tmp_path / "train.csv")))
    assert (proposal.task, proposal.label_separator) == ("multilabel", None)


@pytest.mark.parametrize("separator", ["|", ","])
def test_separated_label_strings_are_multilabel_with_their_separator(tmp_path, separator):
    sample = read_sample(write(multilabel_joined(separator=separator), tmp_path / "train.csv"))
    proposal = guess_schema(sample)
    assert (proposal.task, proposal.label_separator) == ("multilabel", separator)
    assert proposal.text_column == "text"  # commas inside the texts do not make them labels


def test_an_id_column_is_neither_text_nor_label():
    frame = single_text().assign(id=range(60), sentiment=[i % 2 for i in range(60)])
    proposal = guess_schema(frame[["id", "review", "sentiment"]].rename(columns={"sentiment": "y_true"}))
    assert (proposal.text_column, proposal.label_column) == ("review", "y_true")


AMBIGUOUS = {
    "two label-like columns": (
        lambda: (
            single_text().assign(a=[i % 2 for i in range(60)], b=[i % 3 for i in range(60)]).drop(columns="sentiment")
        ),
        "--label-column",
    ),
    "no label-like column": (
        lambda: pd.DataFrame({"one": sentences(30, 1), "two": sentences(30, 2)}),
        "--label-column",
    ),
    "three text columns": (
        lambda: single_text().assign(title=sentences(60, 5), body=sentences(60, 6)),
        "--text-column",
    ),
    "no text column": (lambda: pd.DataFrame({"word": ["a", "b"] * 20, "label": [0, 1] * 20}), "--text-column"),
    "a few fractional values": (
        lambda: single_text().assign(sentiment=[0.5, 1.5, 2.5] * 20),
        "--task classification or --task regression",
    ),
    "too many distinct strings": (
        lambda: single_text().assign(label=[f"code{i}" for i in range(60)]).drop(columns="sentiment"),
        "--task",
    ),
}


@pytest.mark.parametrize("case", AMBIGUOUS)
def test_what_the_sample_does_not_settle_names_the_option_to_pass(case):
    build, option = AMBIGUOUS[case]
    with pytest.raises(CannotDecide, match=f"pass {option}"):
        guess_schema(build())


def test_given_values_are_kept_and_a_missing_column_is_named():
    proposal = guess_schema(regression(), task="classification", text_column="text", label_column="score")
    assert proposal.task == "classification" and proposal.reasons["task"] == "given (--task)"
    assert proposal.reasons["data.text_column"] == "given (--text-column)"
    with pytest.raises(DataError, match="--label-column 'stars' is not a column; the columns are 'text', 'score'"):
        guess_schema(regression(), label_column="stars")
    joined = guess_schema(multilabel_joined(separator=";"), task="multilabel")
    assert joined.label_separator == ";"
    with pytest.raises(CannotDecide, match="pass --label-separator"):
        guess_schema(single_text(), task="multilabel")


@pytest.mark.parametrize("kind", KINDS)
def test_the_rendered_config_loads_with_the_decisions_and_a_comment_on_every_key(kind):
    build, _, expected = KINDS[kind]
    proposal = guess_schema(build())
    text = render_config(proposal, train="/data/train.csv", test="/data/test.csv")
    config = validate_config(yaml.safe_load(text))
    assert config.task == expected["task"]
    for key, value in expected.items():
        if key != "task":
            assert getattr(config.data, key) == value
    keyed = [line for line in text.splitlines() if ":" in line and not line.lstrip().startswith(("#", "-"))]
    assert all("# " in line for line in keyed if not line.endswith(":")), text
    assert config.backbone.candidates == ["bundled:all-MiniLM-L6-v2"]
