"""Augmented copies and the rows they were made from. Once augmentation ran, every train row carries
``SOURCE``: an original its own position at that point, a copy (EDA, a swapped pair, a swapped EDA copy)
the position of the row it was made from. The label review keeps a row and its copies in one fold (else
a flipped row's copy teaches the other folds its wrong label and hides it), reviews the originals only,
and drops a flagged row with its copies. docs/concepts/label-review.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finetune_core.data.columns import AUGMENTED, SOURCE


def as_originals(train: pd.DataFrame) -> pd.DataFrame:
    """``train`` marked as the rows augmentation starts from (``AUGMENTED`` false, ``SOURCE`` each row's
    own position), keeping the marks an earlier augmentation set."""
    marks = {AUGMENTED: False, SOURCE: np.arange(len(train))}
    return train.assign(**{column: value for column, value in marks.items() if column not in train.columns})


@dataclass(frozen=True)
class Copies:
    """Train rows grouped by the row they were made from."""

    groups: np.ndarray  # per row: its source row's id (rows of one group share it)
    original: np.ndarray  # per row: not an augmented copy

    def take(self, rows: np.ndarray | None) -> Copies:
        """The rows at positions ``rows`` (None: all)."""
        return self if rows is None else Copies(self.groups[rows], self.original[rows])

    def with_copies(self, rows: np.ndarray) -> np.ndarray:
        """Positions ``rows`` and every row made from the same source, sorted."""
        return np.flatnonzero(np.isin(self.groups, self.groups[np.asarray(rows, dtype=np.int64)]))


def original_rows(copies: Copies | None, rows: int) -> np.ndarray:
    """Which of ``rows`` train rows are originals (all of them where augmentation added none)."""
    return copies.original if copies is not None else np.ones(rows, dtype=bool)


def train_copies(train_path: str | Path) -> Copies | None:
    """The train file's copies; None where no augmentation added rows (every row its own group)."""
    import pyarrow.parquet as pq

    if SOURCE not in pq.read_schema(train_path).names:
        return None
    table = pq.read_table(train_path, columns=[SOURCE, AUGMENTED])
    groups = table.column(SOURCE).to_numpy()
    original = ~table.column(AUGMENTED).to_numpy(zero_copy_only=False).astype(bool)
    return Copies(np.asarray(groups, dtype=np.int64), original)
