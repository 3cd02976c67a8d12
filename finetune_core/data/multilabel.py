"""Multilabel label sets: parse them from the file, name them, encode them, binarise them.

A row's labels come from a list column (JSONL arrays, Parquet lists), a list written as text
(``["earn", "acq"]`` in a CSV cell; a JSON column that mixes lists with other values is read as
text too) or, with ``data.label_separator``, from a delimited string (``earn|acq``; an empty
string is no label).
Anything else (a bare string without a separator, a number, a missing value, a list holding a
missing value) is a ``DataError`` naming the file, the column and the data row. A row with no
label (``[]``) is allowed here: validation decides whether it may be (check ``empty_labels``).

Prepared splits store each row's labels as a sorted list of label ids (Parquet ``list<int64>``);
training and metrics read them as a multi-hot matrix (``label_matrix``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from finetune_core.errors import DataError

_LIST_TYPES = (list, tuple, np.ndarray)


def _label_name(value) -> str | None:
    """One label as text (an integer-valued float reads as "1"); None when missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip() or None


def parse_labels(value, separator: str | None) -> list[str] | str:
    """The labels of one row (unique, in the order written), or why ``value`` is not a label set."""
    if isinstance(value, _LIST_TYPES):
        names = [_label_name(v) for v in value]
        if any(name is None for name in names):
            return f"the list {list(value)!r} holds a missing or blank label"
        return list(dict.fromkeys(names))
    if isinstance(value, str) and value.lstrip().startswith("["):
        written = _list_from_text(value)
        if written is not None:
            return parse_labels(written, separator)
    if isinstance(value, str) and separator is not None:
        return list(dict.fromkeys(part.strip() for part in value.split(separator) if part.strip()))
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "the label list is missing (an empty list [] means no label)"
    hint = " (a delimited string needs data.label_separator)" if isinstance(value, str) else ""
    return f"{value!r} is not a list of labels{hint}"


def _list_from_text(text: str) -> list | None:
    """A list written as JSON (``["a", "b"]``) or as Python writes one (``['a', 'b']``), else None."""
    import ast
    import json

    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        return value if isinstance(value, list) else None
    return None


def parsed_labels(values: pd.Series, separator: str | None) -> pd.Series:
    """``parse_labels`` of every row: a list of names, or the reason (a str) the row is unusable."""
    return values.map(lambda v: parse_labels(v, separator)).astype(object)


def is_label_list(parsed: pd.Series) -> pd.Series:
    return parsed.map(lambda p: isinstance(p, list)).astype(bool)


def require_label_lists(values: pd.Series, separator: str | None, path, column: str) -> pd.Series:
    """Parsed label lists, or a DataError naming the file, column and 1-based data row of the first bad one
    (``values``' index holds the file's 0-based row positions)."""
    parsed = parsed_labels(values, separator)
    bad = ~is_label_list(parsed)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(f"{path}: column {column!r}, data row {values.index[row] + 1}: {parsed.iloc[row]}")
    return parsed


def label_names(parsed: pd.Series) -> list[str]:
    """Every label a split uses, sorted (numbers by value when all labels are integers)."""
    names = {name for labels in parsed if isinstance(labels, list) for name in labels}
    if names and all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def encode_label_lists(parsed: pd.Series, names: list[str], path, column: str) -> pd.Series:
    """Each row's labels as sorted label ids; a label ``names`` lacks is a DataError naming its row."""
    index = {name: i for i, name in enumerate(names)}
    for position, labels in enumerate(parsed):
        unknown = [name for name in labels if name not in index]
        if unknown:
            raise DataError(
                f"{path}: column {column!r}, data row {parsed.index[position] + 1}: "
                f"label(s) {unknown[:5]} not seen in train"
            )
    return parsed.map(lambda labels: sorted(index[name] for name in labels)).astype(object)


def known_labels_only(parsed: pd.Series, names: list[str]) -> pd.Series:
    """Rows whose labels are all in ``names`` (unparseable rows: False)."""
    known = set(names)
    return parsed.map(lambda labels: isinstance(labels, list) and set(labels) <= known).astype(bool)


def label_matrix(rows, count: int) -> np.ndarray:
    """Multi-hot float32 matrix (rows × ``count``) from per-row label ids; a 2-D array passes through."""
    array = np.asarray(rows, dtype=object) if not isinstance(rows, np.ndarray) else rows
    if array.ndim == 2 and array.dtype != object:
        return array.astype(np.float32)
    matrix = np.zeros((len(array), count), dtype=np.float32)
    for row, ids in enumerate(array):
        matrix[row, np.asarray(ids, dtype=np.int64)] = 1.0
    return matrix


def label_counts(matrix: np.ndarray, names: list[str]) -> dict[str, int]:
    return {name: int(n) for name, n in zip(names, matrix.sum(axis=0).astype(np.int64))}


def pos_weight_vector(setting, names: list[str], train: np.ndarray, cap: float = 100.0) -> np.ndarray | None:
    """BCE positive weights from ``training.pos_weight``: None for "none"; "balanced" is each
    label's negatives / positives on train (PyTorch's recommended pos_weight), capped at ``cap`` so a
    label with one positive row does not swamp the loss (and 1 for a label with no positive);
    a mapping gives its labels' weights, the others 1."""
    if setting == "none":
        return None
    if setting == "balanced":
        positives = train.sum(axis=0).astype(np.float64)
        weights = np.ones(len(names))
        seen = positives > 0
        weights[seen] = np.minimum((len(train) - positives[seen]) / positives[seen], cap)
        return weights
    return np.array([float(setting.get(name, 1.0)) for name in names])
