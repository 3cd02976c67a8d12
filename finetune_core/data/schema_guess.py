"""Guess a data file's text column(s), label column and task from a sample of its rows, for
`finetune init` (docs/how-to/own-data.md). Each decision carries one human-readable reason; when
the sample does not settle one, ``CannotDecide`` names the option that would.

What the rules look at, per column of the sample: whether its values are lists (JSONL arrays,
Parquet lists, or lists written as text), numbers (whole or not) or strings, how many distinct
values it has, how many words a value has, and its name (``label``, ``sentence1`` ...)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finetune_core.config.init_proposal import TASKS, InitProposal
from finetune_core.data.multilabel import parse_labels
from finetune_core.data.readers import check_readable
from finetune_core.errors import DataError

SAMPLE_ROWS = 2_000
MAX_CLASSES = 50  # more distinct strings than this are not classes
MAX_NUMERIC_CLASSES = 20  # whole numbers with at most this many values are classes, more a target
MIN_REGRESSION_VALUES = 10  # fractional numbers with at least this many values are a target
SEPARATORS = ("|", ";", ",")
LABEL_NAMES = ("label", "labels", "target", "targets", "score", "class", "category", "categories",
               "tags", "topics", "sentiment", "rating", "stars", "y", "gold_label", "intent")  # fmt: skip
TEXT_NAMES = ("text", "sentence", "sentence1", "text_a", "question", "question1", "premise", "query", "review",
              "document", "content", "body")  # fmt: skip
PAIR_NAMES = ("text_pair", "sentence2", "text_b", "question2", "hypothesis", "answer", "passage", "response")
ID_NAMES = ("id", "idx", "index", "guid", "uid", "uuid", "key")


class CannotDecide(DataError):
    """The sample does not settle a decision; the message names the option(s) that would."""

    def __init__(self, message: str, *options: str):
        self.options = options
        super().__init__(f"{message}; pass {' and '.join(options)}")


def read_sample(path: Path, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """The first ``rows`` rows of a data file, after the readers' checks (which name the file and line)."""
    kind = check_readable(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=rows), None)
        return batch.to_pandas() if batch is not None else pq.read_schema(path).empty_table().to_pandas()
    if kind == "tsv":  # GLUE-style TSV, read as the readers read it: quotes are ordinary characters
        return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, nrows=rows)
    if kind == "csv":
        return pd.read_csv(path, nrows=rows)
    with path.open(encoding="utf-8-sig") as handle:
        is_array = handle.read(4096).lstrip().startswith("[")
    if is_array:
        return pd.read_json(path, dtype=False, convert_dates=False).head(rows)
    return pd.read_json(path, lines=True, nrows=rows, dtype=False, convert_dates=False)


@dataclass(frozen=True)
class ColumnFacts:
    name: str
    rows: int  # non-missing values in the sample
    distinct: int
    kind: str  # list | number | string
    whole: bool = False  # numbers: every value is a whole number
    words: float = 0.0  # strings: mean words per value
    separator: str | None = None  # strings: the separator that splits them into a few labels

    @property
    def id_like(self) -> bool:
        name = self.name.lower()
        unique_numbers = self.kind == "number" and self.whole and self.distinct == self.rows >= 10
        return name in ID_NAMES or name.endswith("_id") or unique_numbers

    @property
    def few_values(self) -> bool:
        return self.distinct <= min(MAX_CLASSES, max(2, self.rows // 2))

    @property
    def text_like(self) -> bool:
        return self.kind == "string" and not self.id_like and not self.few_values and self.words >= 1.5

    @property
    def label_like(self) -> bool:
        if self.id_like or self.rows == 0:
            return False
        return (
            self.kind in ("list", "number") or self.separator is not None or (self.kind == "string" and self.few_values)
        )

    def looks(self) -> str:
        """What the column holds, in words."""
        if self.kind == "list":
            return "holds lists of labels"
        if self.kind == "number":
            whole = "whole " if self.whole else ""
            return f"holds {self.distinct} distinct {whole}numbers in {self.rows} rows"
        if self.separator is not None:
            return f"holds labels separated by {self.separator!r}"
        return f"holds {self.distinct} distinct strings in {self.rows} rows"


def column_facts(values: pd.Series) -> ColumnFacts:
    name, present = str(values.name), values.dropna()
    rows = len(present)
    if rows and all(isinstance(v, (list, tuple, np.ndarray)) for v in present):
        return ColumnFacts(name, rows, present.map(lambda v: tuple(v)).nunique(), "list")
    strings = present.map(lambda v: v if isinstance(v, str) else None).dropna()
    if rows and len(strings) == rows and all(s.lstrip().startswith("[") for s in strings):
        if all(isinstance(parse_labels(s, None), list) for s in strings):
            return ColumnFacts(name, rows, strings.nunique(), "list")
    numbers = pd.to_numeric(present, errors="coerce") if rows else present
    if rows and not present.map(lambda v: isinstance(v, bool)).any() and numbers.notna().all():
        whole = bool((numbers.astype(float) % 1 == 0).all())
        return ColumnFacts(name, rows, int(numbers.nunique()), "number", whole=whole)
    as_text = present.astype(str)
    words = float(as_text.str.split().str.len().mean()) if rows else 0.0
    return ColumnFacts(name, rows, as_text.nunique(), "string", words=words, separator=_label_separator(as_text))


def _label_separator(values: pd.Series) -> str | None:
    """The separator that splits these strings into a few short labels, some rows holding several."""
    best, best_rows = None, 0
    for separator in SEPARATORS:
        holding = int(values.str.contains(separator, regex=False).sum())
        if holding == 0 or holding <= best_rows:
            continue
        parts = values.str.split(separator, regex=False).explode().str.strip()
        parts = parts[parts != ""]
        few = parts.nunique() <= min(MAX_CLASSES, max(2, len(values) // 2))
        if few and parts.str.split().str.len().mean() <= 3:
            best, best_rows = separator, holding
    return best


def guess_schema(
    sample: pd.DataFrame,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    task: str | None = None,
    label_separator: str | None = None,
) -> InitProposal:
    """The text column(s), label column and task of ``sample``; a given value is kept as given."""
    facts = {str(name): column_facts(sample[name]) for name in sample.columns}
    for option, given in (("--text-column", text_column), ("--text-pair-column", text_pair_column),
                          ("--label-column", label_column)):  # fmt: skip
        if given is not None and given not in facts:
            raise DataError(f"{option} {given!r} is not a column; the columns are {', '.join(map(repr, facts))}")
    if task is not None and task not in TASKS:
        raise DataError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    reasons: dict[str, str] = {}
    given_texts = {text_column, text_pair_column} - {None}
    label = label_column or _guess_label(facts, given_texts, reasons)
    reasons.setdefault("data.label_column", "given (--label-column)")
    text, pair = _guess_texts(facts, label, text_column, text_pair_column, reasons)
    task, separator = _guess_task(facts[label], task, label_separator, reasons)
    return InitProposal(
        text_column=text, text_pair_column=pair, label_column=label, task=task, label_separator=separator,
        reasons=reasons,
    )  # fmt: skip


def _by_name(names: list[str], table: tuple[str, ...]) -> list[str]:
    """``names`` found in ``table`` (case-insensitive), in the table's order of preference."""
    lowered = {name.lower(): name for name in names}
    return [lowered[known] for known in table if known in lowered]


def _guess_label(facts: dict[str, ColumnFacts], texts: set[str], reasons: dict[str, str]) -> str:
    others = [name for name in facts if name not in texts]
    named = _by_name(others, LABEL_NAMES)
    if named:
        reasons["data.label_column"] = f"named like a label column; it {facts[named[0]].looks()}"
        return named[0]
    candidates = [name for name in others if facts[name].label_like]
    if len(candidates) == 1:
        reasons["data.label_column"] = f"the only column that looks like labels: it {facts[candidates[0]].looks()}"
        return candidates[0]
    if not candidates:
        raise CannotDecide(
            "no column looks like labels (few distinct values, numbers or lists) among " + ", ".join(map(repr, others)),
            "--label-column",
        )
    raise CannotDecide(f"several columns could hold the labels: {', '.join(map(repr, candidates))}", "--label-column")


def _pair_like(first: str, second: str) -> bool:
    """Names that say "the first and second text of a pair": sentence1/sentence2, premise/hypothesis ..."""
    a, b = first.lower(), second.lower()
    if a in TEXT_NAMES and b in PAIR_NAMES:
        return True
    return len(a) == len(b) and a[:-1] == b[:-1] and (a[-1], b[-1]) in (("1", "2"), ("a", "b"))


def _guess_texts(
    facts: dict[str, ColumnFacts], label: str, text: str | None, pair: str | None, reasons: dict[str, str]
) -> tuple[str, str | None]:
    texts = [name for name in facts if name != label and (facts[name].text_like or name in (text, pair))]
    if text is not None:
        reasons["data.text_column"] = "given (--text-column)"
        others = [name for name in texts if name not in (text, pair)]
        if pair is None and len(others) == 1 and _pair_like(text, others[0]):
            pair = others[0]
            reasons["data.text_pair_column"] = f"the other text column, named as the second of a pair with {text!r}"
    elif not texts:
        raise CannotDecide(
            f"no column holds text (strings that differ from row to row) besides the labels {label!r}",
            "--text-column",
        )
    elif len(texts) == 1:
        text = texts[0]
        reasons["data.text_column"] = f"the only text column ({facts[text].words:.1f} words per row on average)"
    elif len(texts) == 2 and pair is None:
        text, pair = texts if not _pair_like(texts[1], texts[0]) else texts[::-1]
        reasons["data.text_column"] = f"the first of two text columns ({facts[text].words:.1f} words per row)"
        reasons["data.text_pair_column"] = (
            "the second text column: the rows are read as sentence pairs (for single texts pass --text-column alone)"
        )
    elif pair is not None and len(texts) == 2:
        text = next(name for name in texts if name != pair)
        reasons["data.text_column"] = "the text column that is not the pair column"
    else:
        raise CannotDecide(f"several columns hold text: {', '.join(map(repr, texts))}", "--text-column",
                           "--text-pair-column (for sentence pairs)")  # fmt: skip
    if pair is not None:
        reasons.setdefault("data.text_pair_column", "given (--text-pair-column)")
    return text, pair


def _guess_task(
    label: ColumnFacts, task: str | None, separator: str | None, reasons: dict[str, str]
) -> tuple[str, str | None]:
    if task is not None:
        reasons["task"] = "given (--task)"
        if task == "multilabel" and label.kind != "list" and separator is None:
            separator = label.separator
            if separator is None:
                raise CannotDecide(
                    f"column {label.name!r} holds neither lists nor separated labels", "--label-separator"
                )
            reasons["data.label_separator"] = f"column {label.name!r} {label.looks()}"
        elif separator is not None:
            reasons["data.label_separator"] = "given (--label-separator)"
        return task, separator if task == "multilabel" else None
    if separator is not None:
        reasons["task"] = "multilabel: a label separator was given (--label-separator)"
        reasons["data.label_separator"] = "given (--label-separator)"
        return "multilabel", separator
    looks = f"column {label.name!r} {label.looks()}"
    if label.kind == "list":
        reasons["task"] = f"multilabel: {looks}"
        return "multilabel", None
    if label.kind == "number" and label.whole and label.distinct <= MAX_NUMERIC_CLASSES:
        reasons["task"] = f"classification: {looks}, each a class"
        return "classification", None
    if label.kind == "number" and (label.distinct > MAX_NUMERIC_CLASSES or label.distinct >= MIN_REGRESSION_VALUES):
        reasons["task"] = f"regression: {looks}, a target rather than classes"
        return "regression", None
    if label.kind == "number":
        raise CannotDecide(f"{looks}: classes or a target to predict?", "--task classification or --task regression")
    if label.separator is not None:
        reasons["task"] = f"multilabel: {looks}"
        reasons["data.label_separator"] = f"{label.separator!r} splits the rows of {label.name!r} into a few labels"
        return "multilabel", label.separator
    if label.few_values:
        reasons["task"] = f"classification: {looks}, each a class"
        return "classification", None
    raise CannotDecide(f"{looks}: too many to be classes", "--task", "--label-column")
