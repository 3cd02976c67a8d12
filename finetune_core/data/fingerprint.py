"""The data fingerprint a run records (tag ``data_fingerprint``): a hash of every split's rows,
computed alike from frames in memory and from the prepared Parquet files read chunk by chunk."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from finetune_core.data.chunks import parquet_chunks
from finetune_core.data.columns import LABEL, PREPARE_ROWS, SPLITS


def _hashable(chunk: pd.DataFrame) -> pd.DataFrame:
    """Multilabel label-id lists as text ("0,3"): pandas hashes scalars only."""
    if LABEL in chunk.columns and len(chunk) and isinstance(chunk[LABEL].iloc[0], (list, np.ndarray)):
        return chunk.assign(**{LABEL: chunk[LABEL].map(lambda ids: ",".join(map(str, ids)))})
    return chunk


def _fingerprint(chunks_of_split) -> str:
    """Hash of every split's row hashes in order; ``chunks_of_split(split)`` yields its frames
    (row hashes are per row, so how a split is chunked does not change the result)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(split.encode())
        for chunk in chunks_of_split(split):
            digest.update(pd.util.hash_pandas_object(_hashable(chunk), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def data_fingerprint(frames: dict[str, pd.DataFrame]) -> str:
    return _fingerprint(lambda split: [frames[split]])


def files_fingerprint(paths: dict[str, str]) -> str:
    """``data_fingerprint`` of the prepared files, read chunk by chunk."""
    return _fingerprint(lambda split: parquet_chunks(paths[split], PREPARE_ROWS)())
