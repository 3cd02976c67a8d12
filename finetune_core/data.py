"""Load labelled text tables, map labels, split, and write the prepared splits.

Raw files are never modified: the prepared splits (columns ``text`` and ``label``, the
label already mapped to a class id or a float target) are written to the run directory
and handed on by path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from finetune_core.config import FinetuneConfig
from finetune_core.errors import DataError
from finetune_core.readers import read_table

TEXT, LABEL = "text", "label"
SPLITS = ("train", "validation", "test")


class PreparedData(BaseModel):
    """References to the prepared splits plus what downstream steps need to know about them."""

    task: Literal["classification", "regression"]
    paths: dict[str, str]
    rows: dict[str, int]
    labels: list[str] | None = None  # class names, index = class id (classification)
    target_mean: float = 0.0  # regression targets are standardised for training
    target_std: float = 1.0
    text_column: str
    fingerprint: str  # hash of the prepared splits (after augmentation, when it ran)
    dropped: dict[str, int] = {}  # unusable rows dropped per split after validation warnings

    def frame(self, split: str) -> pd.DataFrame:
        return pd.read_parquet(self.paths[split])


class RawData(BaseModel):
    """Each split's file as read (all its columns), stored as Parquet in the run directory."""

    paths: dict[str, str]
    sources: dict[str, str]  # split -> the file it came from

    def frame(self, split: str) -> pd.DataFrame:
        return pd.read_parquet(self.paths[split])


def read_splits(config: FinetuneConfig, out_dir: Path) -> RawData:
    """Read every configured file (unreadable input fails here, naming the file and line)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, sources = {}, {}
    for split in SPLITS:
        source = getattr(config.data, split)
        if source is None:
            continue
        paths[split], sources[split] = str(out_dir / f"{split}.parquet"), str(source)
        read_table(source).to_parquet(paths[split], index=False)
    return RawData(paths=paths, sources=sources)


def select_columns(frame: pd.DataFrame, path: Path, text_column: str, label_column: str) -> pd.DataFrame:
    for column in (text_column, label_column):
        if column not in frame.columns:
            raise DataError(f"{path}: column {column!r} not found (columns: {', '.join(map(str, frame.columns))})")
    return frame[[text_column, label_column]].rename(columns={text_column: TEXT, label_column: LABEL})


def label_text(value) -> str | None:
    """A label as text; 1.0 (an integer column that had a null) reads as "1"."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _label_names(train: pd.Series) -> list[str]:
    values = train.dropna().unique().tolist()
    numeric = all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer()) for v in values)
    return [label_text(v) for v in (sorted(values) if numeric else sorted(map(str, values)))]


def _usable_rows(frame: pd.DataFrame, names: list[str] | None) -> pd.Series:
    """Rows training can use: a non-blank text and a known label (or a finite target)."""
    text_ok = frame[TEXT].map(lambda v: isinstance(v, str) and v.strip() != "")
    if names is not None:
        return text_ok & frame[LABEL].map(label_text).isin(set(names))
    targets = pd.to_numeric(frame[LABEL], errors="coerce").to_numpy(dtype="float64")
    return text_ok & np.isfinite(targets)


def _encode_labels(frame: pd.DataFrame, names: list[str], path: Path, column: str) -> pd.DataFrame:
    index = {name: i for i, name in enumerate(names)}
    as_text = frame[LABEL].map(label_text)
    unknown = sorted(set(as_text.dropna()) - set(index))
    if unknown:
        raise DataError(f"{path}: column {column!r} has labels not seen in train: {unknown[:10]}")
    if as_text.isna().any():
        row = int(as_text.isna().to_numpy().argmax())
        raise DataError(f"{path}: column {column!r} is empty in data row {row + 1}")
    return frame.assign(**{LABEL: as_text.map(index).astype("int64")})


def _encode_targets(frame: pd.DataFrame, path: Path, column: str) -> pd.DataFrame:
    targets = pd.to_numeric(frame[LABEL], errors="coerce")
    bad = ~np.isfinite(targets.to_numpy(dtype="float64"))
    if bad.any():
        row = int(bad.argmax())
        raise DataError(f"{path}: column {column!r} has a non-numeric target {frame[LABEL].iloc[row]!r} in data row {row + 1}")
    return frame.assign(**{LABEL: targets.astype("float64")})


def seeded_split(items, labels, seed: int, **sizes):
    """train_test_split stratified by ``labels`` (None: not stratified), seeded; a class too
    rare to stratify falls back to a plain seeded split. ``sizes``: train_size or test_size."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(items, random_state=seed, stratify=labels, **sizes)
    except ValueError:
        return train_test_split(items, random_state=seed, **sizes)


def _split_validation(train: pd.DataFrame, fraction: float, seed: int, stratify: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    kept, held = seeded_split(train, train[LABEL] if stratify else None, seed, test_size=fraction)
    return kept.reset_index(drop=True), held.reset_index(drop=True)


def data_fingerprint(frames: dict[str, pd.DataFrame]) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(split.encode())
        digest.update(pd.util.hash_pandas_object(frames[split], index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare_data(config: FinetuneConfig, out_dir: Path, raw: RawData | None = None,
                 drop_unusable: bool = False) -> PreparedData:
    """Encode and split the data; write ``{train,validation,test}.parquet`` to ``out_dir``.

    ``drop_unusable``: after validation has reported them, rows training cannot use (blank
    text, missing or unknown label, non-finite target) are dropped and counted; without it
    they are errors naming the file."""
    data, seed = config.data, config.training.seed
    classification = config.task == "classification"
    raw = raw or read_splits(config, out_dir / "raw")
    frames = {split: select_columns(raw.frame(split), Path(raw.sources[split]), data.text_column, data.label_column)
              for split in raw.paths}
    dropped: dict[str, int] = {}
    if drop_unusable:
        names = _label_names(frames["train"][LABEL]) if classification else None
        for split, frame in frames.items():
            usable = _usable_rows(frame, names)
            dropped[split] = int((~usable).sum())
            frames[split] = frame[usable].reset_index(drop=True)
    names = _label_names(frames["train"][LABEL]) if classification else None
    encoded = {}
    for split, frame in frames.items():
        path = getattr(data, split)
        if classification:
            encoded[split] = _encode_labels(frame, names, path, data.label_column)
        else:
            encoded[split] = _encode_targets(frame, path, data.label_column)
        encoded[split][TEXT] = encoded[split][TEXT].map(lambda v: None if pd.isna(v) else str(v))

    if "validation" not in encoded:
        encoded["train"], encoded["validation"] = _split_validation(
            encoded["train"], data.validation_fraction, seed, stratify=classification
        )
    if data.max_train_samples is not None and data.max_train_samples < len(encoded["train"]):
        encoded["train"] = encoded["train"].sample(n=data.max_train_samples, random_state=seed).reset_index(drop=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLITS:
        paths[split] = str(out_dir / f"{split}.parquet")
        encoded[split].to_parquet(paths[split], index=False)
    mean, std = 0.0, 1.0
    if not classification:
        mean = float(encoded["train"][LABEL].mean())
        std = float(encoded["train"][LABEL].std(ddof=0)) or 1.0
    return PreparedData(
        task=config.task,
        paths=paths,
        rows={split: len(encoded[split]) for split in SPLITS},
        labels=names,
        target_mean=mean,
        target_std=std,
        text_column=data.text_column,
        fingerprint=data_fingerprint(encoded),
        dropped=dropped,
    )


def basic_checks(prepared: PreparedData, config: FinetuneConfig) -> dict:
    """Checks every run needs before training; Great Expectations suites go deeper."""
    summary: dict = {"rows": prepared.rows, "fingerprint": prepared.fingerprint}
    for split in SPLITS:
        frame = prepared.frame(split)
        source = getattr(config.data, split) or config.data.train
        if frame.empty:
            raise DataError(f"{source}: the {split} split has no rows")
        blank = frame[TEXT].isna() | (frame[TEXT].fillna("").str.strip() == "")
        if blank.any():
            raise DataError(
                f"{source}: column {config.data.text_column!r} is empty in {int(blank.sum())} row(s) of the {split} split"
            )
    if prepared.task == "classification":
        counts = prepared.frame("train")[LABEL].value_counts().sort_index()
        if len(counts) < 2:
            raise DataError(f"{config.data.train}: column {config.data.label_column!r} has fewer than 2 classes")
        summary["train_class_counts"] = {prepared.labels[i]: int(n) for i, n in counts.items()}
    return summary
