"""Load labelled text tables, map labels, split, and write the prepared splits.

Raw files are never modified: the prepared splits (columns ``text`` and ``label``, the
label already mapped to a class id or a float target) are written to the run directory
and handed on by path.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from finetune_core.config import FinetuneConfig
from finetune_core.errors import DataError

TEXT, LABEL = "text", "label"
SPLITS = ("train", "validation", "test")
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class PreparedData(BaseModel):
    """References to the prepared splits plus what downstream steps need to know about them."""

    task: Literal["classification", "regression"]
    paths: dict[str, str]
    rows: dict[str, int]
    labels: list[str] | None = None  # class names, index = class id (classification)
    target_mean: float = 0.0  # regression targets are standardised for training
    target_std: float = 1.0
    text_column: str
    fingerprint: str

    def frame(self, split: str) -> pd.DataFrame:
        return pd.read_parquet(self.paths[split])


def read_table(path: Path, text_column: str, label_column: str) -> pd.DataFrame:
    """Read one file with `datasets`, by extension; errors name the file and the column."""
    import datasets  # heavy import, only when data is actually read

    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"data path is not a file: {path}")
    kind = _FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported extension {path.suffix!r} (use one of {', '.join(_FORMATS)})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    builder, options = kind, {}
    if kind == "tsv":  # GLUE-style TSV: tab separated, quotes are ordinary characters
        builder, options = "csv", {"sep": "\t", "quoting": csv.QUOTE_NONE}
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as exc:  # datasets wraps parser errors in several exception types
        cause = exc.__cause__ or exc
        raise DataError(f"{path}: could not be read as {kind}: {type(cause).__name__}: {cause}") from None
    frame = table.to_pandas()
    for column in (text_column, label_column):
        if column not in frame.columns:
            raise DataError(f"{path}: column {column!r} not found (columns: {', '.join(map(str, frame.columns))})")
    return frame[[text_column, label_column]].rename(columns={text_column: TEXT, label_column: LABEL})


def _label_names(train: pd.Series) -> list[str]:
    values = train.dropna().unique().tolist()
    numeric = all(isinstance(v, (int, np.integer)) for v in values)
    return [str(v) for v in (sorted(values) if numeric else sorted(map(str, values)))]


def _encode_labels(frame: pd.DataFrame, names: list[str], path: Path, column: str) -> pd.DataFrame:
    index = {name: i for i, name in enumerate(names)}
    as_text = frame[LABEL].map(lambda v: None if pd.isna(v) else str(v))
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


def _split_validation(train: pd.DataFrame, fraction: float, seed: int, stratify: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    labels = train[LABEL] if stratify else None
    try:
        kept, held = train_test_split(train, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError:  # a class too rare to stratify: fall back to a plain seeded split
        kept, held = train_test_split(train, test_size=fraction, random_state=seed)
    return kept.reset_index(drop=True), held.reset_index(drop=True)


def _fingerprint(frames: dict[str, pd.DataFrame]) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(split.encode())
        digest.update(pd.util.hash_pandas_object(frames[split], index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare_data(config: FinetuneConfig, out_dir: Path) -> PreparedData:
    """Read, encode and split the data; write ``{train,validation,test}.parquet`` to ``out_dir``."""
    data, seed = config.data, config.training.seed
    classification = config.task == "classification"
    raw = {"train": read_table(data.train, data.text_column, data.label_column)}
    for split in ("validation", "test"):
        path = getattr(data, split)
        if path is not None:
            raw[split] = read_table(path, data.text_column, data.label_column)

    names = _label_names(raw["train"][LABEL]) if classification else None
    encoded = {}
    for split, frame in raw.items():
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
        fingerprint=_fingerprint(encoded),
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
