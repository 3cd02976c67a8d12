"""Batch scoring's file handling, without the model: read a data file a batch at a time and write
the input's columns with the predictions next to them, incrementally, so a file larger than
memory is scored in constant memory.

Input goes through the library's readers (the structural checks that name file and line, then
`datasets` → Parquet); a Parquet input is read in place. Batches come from ``pyarrow`` in file
order, so the output's rows are the input's rows, in order. The output's format follows its
extension (CSV, TSV, JSONL, Parquet); it is written to a hidden sibling file and renamed when
complete, so a failed run never leaves a half-written OUTPUT behind.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from finetune_core.data.readers import check_readable, file_format, read_to_parquet
from finetune_core.errors import DataError

# An output column whose name the input already uses gets this prefix (scoring a labelled test
# file gives `label` and `predicted_label` side by side).
PREDICTED_PREFIX = "predicted_"


class InputBatches:
    """A data file as Parquet: its columns, its row count, and its rows a batch at a time."""

    def __init__(self, source: str | Path, scratch: str | Path):
        self.source = Path(source)
        if check_readable(self.source) == "parquet":
            self.parquet = self.source
        else:
            self.parquet = Path(scratch) / "input.parquet"
            read_to_parquet(self.source, self.parquet)
        import pyarrow.parquet as pq

        file = pq.ParquetFile(self.parquet)
        self.columns: list[str] = list(file.schema_arrow.names)
        self.rows: int = file.metadata.num_rows
        if self.rows == 0:
            raise DataError(f"{self.source}: no rows to score")

    def require(self, columns: list[str]) -> None:
        """DataError naming the first column the model needs that the file lacks."""
        for column in columns:
            if column not in self.columns:
                raise DataError(
                    f"{self.source}: column {column!r} not found; the model reads it "
                    f"(columns: {', '.join(map(str, self.columns))})"
                )

    def batches(self, size: int) -> Iterator[pd.DataFrame]:
        import pyarrow.parquet as pq

        offset = 0
        for batch in pq.ParquetFile(self.parquet).iter_batches(batch_size=size):
            frame = batch.to_pandas()
            frame.index = pd.RangeIndex(offset, offset + len(frame))
            offset += len(frame)
            yield frame


def output_names(input_columns: list[str], output_columns: list[str]) -> dict[str, str]:
    """Each prediction column's name in the output: its own, or prefixed while it would collide."""
    taken, names = set(input_columns), {}
    for column in output_columns:
        name = str(column)
        while name in taken:
            name = PREDICTED_PREFIX + name
        names[column] = name
        taken.add(name)
    return names


def with_predictions(batch: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The batch's columns, then the predictions' (row for row, by position)."""
    if len(predictions) != len(batch):
        raise ValueError(f"the model returned {len(predictions)} rows for a batch of {len(batch)}")
    renamed = predictions.rename(columns=output_names(list(batch.columns), list(predictions.columns)))
    renamed.index = batch.index
    return pd.concat([batch, renamed], axis=1)


def _tsv_value(value, column: str, path: Path) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = repr(value) if isinstance(value, float) else str(value)
    if any(c in text for c in "\t\n\r"):
        raise DataError(
            f"{path}: a value in column {column!r} holds a tab or a line break, which TSV cannot carry; "
            "write .csv, .jsonl or .parquet instead"
        )
    return text


class BatchWriter:
    """Appends frames to OUTPUT in its extension's format; ``close()`` publishes the file.
    Use as a context manager: an exception discards the partial file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.kind = file_format(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self._parquet = None  # pyarrow.parquet.ParquetWriter, opened with the first batch's schema
        self._handle = None if self.kind == "parquet" else self.partial.open("w", encoding="utf-8", newline="")
        self._first = True

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == "parquet":
            self._write_parquet(frame)
        elif self.kind == "csv":
            frame.to_csv(self._handle, header=self._first, index=False, lineterminator="\n")
        elif self.kind == "tsv":  # GLUE-style TSV as the readers read it: no quoting at all
            columns = list(frame.columns)
            lines = [] if not self._first else ["\t".join(map(str, columns))]
            for row in frame.itertuples(index=False, name=None):
                lines.append("\t".join(_tsv_value(v, c, self.path) for v, c in zip(row, columns)))
            self._handle.write("".join(line + "\n" for line in lines))
        else:  # jsonl: one object per line, in column order
            for record in frame.astype(object).where(frame.notna(), None).to_dict(orient="records"):
                self._handle.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")
        self._first = False

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(str(self.partial), table.schema)
        else:  # a later batch whose column was all-null reads back as another type
            table = table.cast(self._parquet.schema)
        self._parquet.write_table(table)

    def close(self) -> Path:
        if self._parquet is not None:
            self._parquet.close()
        if self._handle is not None:
            self._handle.close()
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        for resource in (self._parquet, self._handle):
            if resource is not None:
                resource.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


def _json_default(value):
    """numpy scalars, timestamps and arrays (a multilabel model's `labels`) in JSON lines."""
    if getattr(value, "ndim", 0) > 0:  # an array: .item() only takes one element
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
