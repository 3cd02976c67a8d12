"""A split a chunk of rows at a time, so no step holds a large file in pandas.

Splits travel between steps as Parquet files; every step that looks at all rows reads them
with ``pyarrow`` in batches of ``rows`` and keeps only per-row numbers (hashes, flags, labels),
never the texts. Each chunk's index is its rows' 0-based position in the whole split, so a
report can name the data row however the split was chunked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

Chunks = Callable[[], Iterator[pd.DataFrame]]  # a fresh pass over a split each call


def release_free_memory() -> None:
    """Hand memory freed by earlier chunks back to the OS. Both allocators keep it otherwise:
    glibc's heap (its mmap threshold rises to the chunk-sized arrays once one is freed, so
    later ones land on the heap) and Arrow's mimalloc pool. Over a 6-million-row pass that was
    hundreds of MB of retained memory, growing with the number of chunks
    (docs/benchmarks/scale.md)."""
    import ctypes
    import ctypes.util

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):  # glibc only
        ctypes.CDLL(libc).malloc_trim(0)


def parquet_chunks(path: str | Path, rows: int, columns: list[str] | None = None) -> Chunks:
    import pyarrow.parquet as pq

    def chunks() -> Iterator[pd.DataFrame]:
        offset = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns):
            frame = batch.to_pandas()
            frame.index = pd.RangeIndex(offset, offset + len(frame))
            offset += len(frame)
            del batch
            yield frame
            del frame
            release_free_memory()
        if offset == 0:  # no rows: one empty chunk with the file's columns, so every pass sees them
            yield pq.read_schema(path).empty_table().select(columns or pq.read_schema(path).names).to_pandas()

    return chunks


def frame_chunks(frame: pd.DataFrame, rows: int) -> Chunks:
    frame = frame.reset_index(drop=True)
    return lambda: (frame.iloc[start : start + rows] for start in range(0, max(len(frame), 1), rows))


def chunks_of(source: pd.DataFrame | str | Path, rows: int, columns: list[str] | None = None) -> Chunks:
    """``source``: a frame already in memory (tests, small data) or a Parquet file."""
    if isinstance(source, pd.DataFrame):
        return frame_chunks(source if columns is None else source[columns], rows)
    return parquet_chunks(source, rows, columns)


def parquet_columns(path: str | Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def take_rows(
    path: str | Path, indexes: np.ndarray, rows: int = 100_000, columns: list[str] | None = None
) -> pd.DataFrame:
    """The rows at ``indexes`` (any order; returned in that order), reading the file in chunks."""
    indexes = np.asarray(indexes)
    wanted = np.sort(np.unique(indexes))
    picked = []
    for chunk in parquet_chunks(path, rows, columns)():
        start, stop = chunk.index[0], chunk.index[-1] + 1
        inside = wanted[(wanted >= start) & (wanted < stop)]
        if len(inside):
            picked.append(chunk.loc[inside])
    frame = pd.concat(picked) if picked else pd.DataFrame(columns=columns)
    return frame.loc[indexes].reset_index(drop=True)


def write_parquet_chunks(chunks: Iterator[pd.DataFrame], path: str | Path, schema) -> int:
    """Write frames one after another into one Parquet file of ``schema`` (written even when
    there are no rows); returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for frame in chunks:
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            written += len(frame)
    return written
