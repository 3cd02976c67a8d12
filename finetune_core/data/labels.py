"""A split's labels and targets, row by row: a label's text form, the class names train holds,
which rows training can use, and the encoding of labels to class ids and of targets to floats
(errors name the file, the column and the data row). ``read_labels`` reads a prepared split's
label column alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune_core.data.columns import LABEL, TEXTS
from finetune_core.errors import DataError


def label_text(value) -> str | None:
    """A label as text; 1.0 (an integer column that had a null) reads as "1"."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def class_names(train: pd.Series) -> list[str]:
    values = train.dropna().unique().tolist()
    numeric = all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer()) for v in values)
    return [label_text(v) for v in (sorted(values) if numeric else sorted(map(str, values)))]


def has_text(frame: pd.DataFrame) -> pd.Series:
    """Rows whose text (and, for pairs, second text) is a non-blank string."""
    present = pd.Series(True, index=frame.index)
    for column in [c for c in TEXTS if c in frame.columns]:
        present &= frame[column].map(lambda v: isinstance(v, str) and v.strip() != "").astype(bool)
    return present


def usable_rows(frame: pd.DataFrame, names: list[str] | None) -> pd.Series:
    """Rows training can use: a non-blank text and a known label (or a finite target)."""
    text_ok = has_text(frame)
    if names is not None:
        return text_ok & frame[LABEL].map(label_text).isin(set(names))
    targets = pd.to_numeric(frame[LABEL], errors="coerce").to_numpy(dtype="float64")
    return text_ok & np.isfinite(targets)


def encode_labels(frame: pd.DataFrame, names: list[str], path: Path, column: str) -> pd.DataFrame:
    index = {name: i for i, name in enumerate(names)}
    as_text = frame[LABEL].map(label_text).astype(object)
    unknown = sorted(set(as_text.dropna()) - set(index))
    if unknown:
        raise DataError(f"{path}: column {column!r} has labels not seen in train: {unknown[:10]}")
    if as_text.isna().any():
        row = frame.index[int(as_text.isna().to_numpy().argmax())]  # chunks keep the file's row positions
        raise DataError(f"{path}: column {column!r} is empty in data row {row + 1}")
    return frame.assign(**{LABEL: as_text.map(index).astype("int64")})


def encode_targets(frame: pd.DataFrame, path: Path, column: str) -> pd.DataFrame:
    targets = pd.to_numeric(frame[LABEL], errors="coerce")
    bad = ~np.isfinite(targets.to_numpy(dtype="float64"))
    if bad.any():
        row = int(bad.argmax())
        raise DataError(
            f"{path}: column {column!r} has a non-numeric target {frame[LABEL].iloc[row]!r} "
            f"in data row {frame.index[row] + 1}"
        )
    return frame.assign(**{LABEL: targets.astype("float64")})


def read_labels(path: str | Path) -> np.ndarray:
    """A prepared split's label column alone (class ids or targets), without its texts."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[LABEL]).column(LABEL).to_numpy()
