"""Checks every run makes on its prepared splits before training (Great Expectations suites,
finetune_core.validation, go deeper): no empty split, no blank text, at least two classes or labels."""

from __future__ import annotations

import numpy as np

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.chunks import parquet_chunks
from finetune_core.data.labels import read_labels
from finetune_core.data.multilabel import label_matrix
from finetune_core.data.prepare import LABEL, PREPARE_ROWS, SPLITS, PreparedData
from finetune_core.errors import DataError


def basic_checks(prepared: PreparedData, config: FinetuneConfig) -> dict:
    """Checks every run needs before training; Great Expectations suites go deeper."""
    summary: dict = {"rows": prepared.rows, "fingerprint": prepared.fingerprint}
    for split in SPLITS:
        source = getattr(config.data, split) or config.data.train
        if prepared.rows[split] == 0:
            raise DataError(f"{source}: the {split} split has no rows")
        for column, name in prepared.text_columns.items():
            blank = 0
            for chunk in parquet_chunks(prepared.paths[split], PREPARE_ROWS, [column])():
                blank += int((chunk[column].isna() | (chunk[column].fillna("").str.strip() == "")).sum())
            if blank:
                raise DataError(f"{source}: column {name!r} is empty in {blank} row(s) of the {split} split")
    if prepared.task == "classification":
        counts = np.zeros(len(prepared.labels), dtype=np.int64)
        for chunk in parquet_chunks(prepared.paths["train"], PREPARE_ROWS, [LABEL])():
            counts += np.bincount(chunk[LABEL].to_numpy(), minlength=len(counts))
        if (counts > 0).sum() < 2:
            raise DataError(f"{config.data.train}: column {config.data.label_column!r} has fewer than 2 classes")
        summary["train_class_counts"] = {prepared.labels[i]: int(n) for i, n in enumerate(counts) if n}
    if prepared.task == "multilabel":
        counts = label_matrix(read_labels(prepared.paths["train"]), len(prepared.labels)).sum(axis=0)
        if (counts > 0).sum() < 2:
            raise DataError(f"{config.data.train}: column {config.data.label_column!r} has fewer than 2 labels")
        summary["train_label_counts"] = {prepared.labels[i]: int(n) for i, n in enumerate(counts) if n}
    return summary
