"""Test helper: a small data file read into pandas through the library's own reader."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from finetune_core.data.readers import read_to_parquet


def read_table(path: Path) -> pd.DataFrame:
    """Every column of one (small) file, read the way the pipeline reads it."""
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "table.parquet"
        read_to_parquet(Path(path), target)
        return pd.read_parquet(target)
