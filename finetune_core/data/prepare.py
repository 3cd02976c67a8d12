"""Load labelled text tables, map labels, split, and write the prepared splits.

Raw files are never modified: the prepared splits (columns ``text`` and ``label``, the
label already mapped to a class id or a float target) are written to the run directory
and handed on by path.

Nothing here holds a split in pandas: files are read through ``datasets`` (Arrow) and written
to Parquet batch by batch, and preparing streams each split in chunks of ``PREPARE_ROWS``,
keeping only per-row numbers (label ids for the stratified split) between passes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.chunks import parquet_chunks, parquet_columns, write_parquet_chunks
from finetune_core.data.columns import LABEL, PREPARE_ROWS, SPLITS, TEXT, TEXT_PAIR, text_columns  # noqa: F401
from finetune_core.data.fingerprint import files_fingerprint
from finetune_core.data.labels import class_names, encode_labels, encode_targets, has_text, read_labels, usable_rows
from finetune_core.data.multilabel import (
    encode_label_lists,
    known_labels_only,
    label_names,
    parsed_labels,
    require_label_lists,
)
from finetune_core.data.readers import read_to_parquet
from finetune_core.data.sampling import seeded_sample
from finetune_core.errors import ConfigError, DataError

# Fewer validation rows than this in some class decide an epoch or a temperature by one or two
# examples' noise: training.recipe then skips both. 3, not more: the 120-row SST-2 sample the flow
# tests use holds out 4 rows of its smaller class, and 10 % of 16-32 rows (8-16 per class) leaves
# 1-2 per class. Rows held out of train for such a split stay in train as well (SetFit trains on
# every labelled row): with 8 per class that is 16 training rows, not 14.
MIN_VALIDATION_ROWS_PER_CLASS = 3


class PreparedData(BaseModel):
    """References to the prepared splits plus what downstream steps need to know about them."""

    task: Literal["classification", "regression", "multilabel"]
    paths: dict[str, str]
    rows: dict[str, int]
    labels: list[str] | None = None  # class (multilabel: label) names, index = id
    target_mean: float = 0.0  # regression targets are standardised for training
    target_std: float = 1.0
    # the prepared text columns (the tokenisation input, in order) -> the source columns they were
    # read from: {TEXT: ...}, or for sentence pairs {TEXT: ..., TEXT_PAIR: ...} (columns.text_columns)
    text_columns: dict[str, str]
    fingerprint: str  # hash of the prepared splits (after augmentation, when it ran)
    dropped: dict[str, int] = {}  # unusable rows dropped per split after validation warnings
    # the validation rows were held out of train, too few per class to decide anything, and put
    # back: they train as well, so validation metrics are not held-out scores (recipe skips them)
    validation_in_train: bool = False

    @property
    def pairs(self) -> bool:
        """Sentence pairs: two texts per row, tokenised together."""
        return len(self.text_columns) > 1

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
        read_to_parquet(source, Path(paths[split]))
    return RawData(paths=paths, sources=sources)


def select_columns(frame: pd.DataFrame, path: Path, texts: dict[str, str], label_column: str) -> pd.DataFrame:
    """The source's ``texts`` (``text_columns``) and label, under their prepared names."""
    names = {source: prepared for prepared, source in texts.items()} | {label_column: LABEL}
    for column in names:
        if column not in frame.columns:
            raise DataError(f"{path}: column {column!r} not found (columns: {', '.join(map(str, frame.columns))})")
    return frame[list(names)].rename(columns=names)


def require_columns(parquet_path: str | Path, source: Path, texts: dict[str, str], label_column: str) -> None:
    """``select_columns``'s error, from a Parquet file's schema alone (before any pass over its rows)."""
    frame = pd.DataFrame(columns=parquet_columns(parquet_path))
    select_columns(frame, source, texts, label_column)


def _schema(task: str, texts):
    import pyarrow as pa

    texts = [(column, pa.string()) for column in texts]
    label = {"classification": pa.int64(), "multilabel": pa.list_(pa.int64())}.get(task, pa.float64())
    return pa.schema([*texts, (LABEL, label)])


class _Preparer:
    """Streams each split: columns → usable rows → encoded labels/targets → Parquet."""

    def __init__(self, config: FinetuneConfig, raw: RawData, drop_unusable: bool):
        self.config, self.raw, self.drop_unusable = config, raw, drop_unusable
        self.classification = config.task == "classification"
        self.multilabel = config.task == "multilabel"  # labels: a list per row, ids in a list<int64> column
        self.dropped: dict[str, int] = {}
        self.texts = text_columns(config.data.text_column, config.data.text_pair_column)
        for split in raw.paths:  # a missing column fails before any pass, naming the file
            require_columns(raw.paths[split], Path(raw.sources[split]), self.texts, config.data.label_column)
        self.names = self._label_names() if self.classification or self.multilabel else None

    def _chunks(self, split: str):
        label = self.config.data.label_column
        for chunk in parquet_chunks(self.raw.paths[split], PREPARE_ROWS, [*self.texts.values(), label])():
            yield select_columns(chunk, Path(self.raw.sources[split]), self.texts, label)

    def _label_names(self) -> list[str]:
        """Class names from train's labels (of rows training can use, with ``drop_unusable``)."""
        values: set = set()
        for chunk in self._chunks("train"):
            if self.drop_unusable:  # rows without a label are dropped below; without text, here
                chunk = chunk[has_text(chunk)]
            if self.multilabel:  # unparseable rows fail (or are dropped) in ``encoded``, naming their row
                values.update(label_names(parsed_labels(chunk[LABEL], self.config.data.label_separator)))
            else:
                values.update(chunk[LABEL].dropna().unique().tolist())
        if self.multilabel:
            return label_names(pd.Series([sorted(values)], dtype=object))
        return class_names(pd.Series(sorted(values, key=str), dtype=object))

    def _encode_label_sets(self, chunk: pd.DataFrame, path, column: str) -> pd.DataFrame:
        separator = self.config.data.label_separator
        if self.drop_unusable:
            usable = has_text(chunk) & known_labels_only(parsed_labels(chunk[LABEL], separator), self.names)
            self.dropped[self._split] += int((~usable).sum())
            chunk = chunk[usable]
        parsed = require_label_lists(chunk[LABEL], separator, path, column)
        return chunk.assign(**{LABEL: encode_label_lists(parsed, self.names, path, column)})

    def encoded(self, split: str):
        path, column = getattr(self.config.data, split), self.config.data.label_column
        self.dropped[split], self._split = 0, split
        for chunk in self._chunks(split):
            if self.multilabel:
                chunk = self._encode_label_sets(chunk, path, column)
            elif self.drop_unusable:
                usable = usable_rows(chunk, self.names)
                self.dropped[split] += int((~usable).sum())
                chunk = chunk[usable]
            if self.classification:
                chunk = encode_labels(chunk, self.names, path, column)
            elif not self.multilabel:
                chunk = encode_targets(chunk, path, column)
            yield chunk.assign(
                **{c: chunk[c].map(lambda v: None if pd.isna(v) else str(v)).astype(object) for c in self.texts}
            )

    def write(self, rows, path: Path) -> int:
        return write_parquet_chunks(rows, path, _schema(self.config.task, self.texts))


def _kept_rows(chunks, keep: np.ndarray):
    """The rows whose 0-based position (over all chunks) is in the sorted array ``keep``."""
    offset = 0
    for chunk in chunks:
        low, high = np.searchsorted(keep, [offset, offset + len(chunk)])
        yield chunk.iloc[keep[low:high] - offset]
        offset += len(chunk)


def _check_class_weights(config: FinetuneConfig, names: list[str] | None) -> None:
    """A ``training.class_weights`` mapping may name only classes train has (known only now)."""
    for field in ("class_weights", "pos_weight"):
        weights = getattr(config.training, field)
        if isinstance(weights, dict) and names is not None:
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ConfigError(
                    f"training.{field} names label(s) {unknown} not in {config.data.train} "
                    f"column {config.data.label_column!r} (labels: {names[:20]})"
                )


def prepare_splits(
    config: FinetuneConfig, out_dir: Path, raw: RawData | None = None, drop_unusable: bool = False
) -> PreparedData:
    """Encode and split the data; write ``{train,validation,test}.parquet`` to ``out_dir``.

    ``drop_unusable``: after validation has reported them, rows training cannot use (blank
    text, missing or unknown label, non-finite target) are dropped and counted; without it
    they are errors naming the file."""
    data, seed = config.data, config.training.seed
    raw = raw or read_splits(config, out_dir / "raw")
    preparer = _Preparer(config, raw, drop_unusable)
    _check_class_weights(config, preparer.names)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {split: str(out_dir / f"{split}.parquet") for split in SPLITS}
    rows = {split: preparer.write(preparer.encoded(split), Path(paths[split])) for split in raw.paths}
    total, held, validation_in_train = rows["train"], None, False
    kept = np.arange(total)
    if "validation" not in raw.paths:  # held out of train by a seeded split of row positions
        labels = read_labels(paths["train"]) if preparer.classification else None
        held = seeded_sample(labels, total, math.ceil(data.validation_fraction * total), seed)
        validation_in_train = too_few_to_validate(labels, held, len(preparer.names or []))
        del labels
        if not validation_in_train:
            kept = np.delete(kept, held)
    if data.max_train_samples is not None and data.max_train_samples < len(kept):
        kept = np.sort(np.random.RandomState(seed).choice(kept, size=data.max_train_samples, replace=False))
    if held is not None or len(kept) < total:  # rewrite train with the kept rows, validation with the held
        unsplit = out_dir / "train-unsplit.parquet"
        Path(paths["train"]).replace(unsplit)
        for split, positions in (("train", kept), ("validation", held)):
            if positions is not None:
                rows[split] = preparer.write(
                    _kept_rows(parquet_chunks(unsplit, PREPARE_ROWS)(), positions), Path(paths[split])
                )
        unsplit.unlink()
    mean, std = 0.0, 1.0
    if config.task == "regression":
        targets = read_labels(paths["train"])
        mean, std = float(targets.mean()), float(targets.std(ddof=0)) or 1.0
    return PreparedData(
        task=config.task,
        paths=paths,
        rows={split: rows[split] for split in SPLITS},
        labels=preparer.names,
        target_mean=mean,
        target_std=std,
        text_columns=preparer.texts,
        fingerprint=files_fingerprint(paths),
        dropped=preparer.dropped if drop_unusable else {},
        validation_in_train=validation_in_train,
    )


def too_few_to_validate(labels: np.ndarray | None, held: np.ndarray, classes: int) -> bool:
    """Whether a held-out split of class ids ``labels[held]`` has fewer than
    ``MIN_VALIDATION_ROWS_PER_CLASS`` rows of some class (never for regression or multilabel)."""
    if labels is None or not classes:
        return False
    return int(np.bincount(labels[held], minlength=classes).min()) < MIN_VALIDATION_ROWS_PER_CLASS
