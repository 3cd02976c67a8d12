"""Great Expectations checks on multilabel label sets, as derived columns of each chunk.

A row's label set is parsed as training parses it (``data.multilabel.parse_labels``: a list, or
a string split on ``data.label_separator``). Each check is a row-level expectation on a derived
column, so it adds up over chunks like every other check:

- ``label_format`` (every split): the label value is a list of labels (or a delimited string);
  a bare string without a separator, a number, a list holding a missing value are not;
- ``empty_labels`` (every split): the row has at least one label. Rows with no label are
  legitimate negatives in some data (a story with no topic) and a lost join in other data, so
  the severity says which: `warning` (the default) reports them, `error` stops the run, `off`;
- ``labels_known`` (validation, test): every label of the row occurs in train (the model has
  no output for it);
- ``class_rows`` (train): the rarest label of the row has at least ``min_class_rows`` train
  rows (warning), ``min_class_rows_error`` (error);
- ``label_typos`` (train): no label of the row looks like a case/spacing variant or misspelling
  of a more frequent label (``validation.labels``), on the per-label counts.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from finetune_core.data.multilabel import parsed_labels

LABEL_FORMAT, LABELS_IN_ROW, UNKNOWN_LABELS, RAREST_LABEL_ROWS, LABEL_SET_TYPOS = (
    "[label value is a list of labels]",
    "[labels in row]",
    "[labels not in train]",
    "[train rows of its rarest label]",
    "[labels that look like a typo]",
)
LABEL_SET_DERIVED = (LABEL_FORMAT, LABELS_IN_ROW, UNKNOWN_LABELS, RAREST_LABEL_ROWS, LABEL_SET_TYPOS)
SHOWN = (UNKNOWN_LABELS, LABEL_SET_TYPOS)  # what a reader needs next to an example row


def count_labels(chunks, label: str, separator: str | None) -> Counter:
    """Train rows per label, over every chunk (rows whose value does not parse count for nothing)."""
    counts: Counter = Counter()
    for chunk in chunks():
        if label in chunk:
            for labels in parsed_labels(chunk[label], separator):
                if isinstance(labels, list):
                    counts.update(labels)
    return counts


def derive_label_sets(
    out: pd.DataFrame, label: str, split: str, separator: str | None, counts: dict, typos: dict
) -> pd.DataFrame:
    """``out`` with the derived label-set columns; the label column itself shown as text."""
    parsed = parsed_labels(out[label], separator)
    ok = parsed.map(lambda p: isinstance(p, list)).astype(bool)
    lists = parsed.where(ok, None).map(lambda p: p if isinstance(p, list) else [])
    out[LABEL_FORMAT] = ok.to_numpy()
    out[LABELS_IN_ROW] = lists.map(len).astype("float64").where(ok, np.nan)
    if split == "train":
        rarest = lists.map(lambda names: min((counts.get(n, 0) for n in names), default=np.nan))
        out[RAREST_LABEL_ROWS] = rarest.astype("float64")
        out[LABEL_SET_TYPOS] = lists.map(lambda names: ", ".join(f"{n}->{typos[n]}" for n in names if n in typos))
    else:
        out[UNKNOWN_LABELS] = lists.map(lambda names: ", ".join(n for n in names if n not in counts))
    out[label] = out[label].map(_shown).astype(object)  # lists as text: GX and the reports read strings
    return out


def _shown(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def label_set_expectations(split: str, frame: pd.DataFrame, add, add_levels, expectations) -> None:
    """Plan the label-set checks of ``split`` with the planner's ``add`` / ``add_levels``."""
    E = expectations
    add("label_format", E.ExpectColumnValuesToBeInSet(column=LABEL_FORMAT, value_set=[True]))
    add("empty_labels", E.ExpectColumnValuesToBeBetween(column=LABELS_IN_ROW, min_value=1))
    if split == "train":
        add_levels("class_rows", lambda rows: E.ExpectColumnValuesToBeBetween(column=RAREST_LABEL_ROWS, min_value=rows))
        add("label_typos", E.ExpectColumnValuesToBeInSet(column=LABEL_SET_TYPOS, value_set=[""]))
    elif UNKNOWN_LABELS in frame:
        add("labels_known", E.ExpectColumnValuesToBeInSet(column=UNKNOWN_LABELS, value_set=[""]))
