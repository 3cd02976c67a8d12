"""A prepared split's token ids on disk, memory-mapped, so training never holds a split in RAM.

The Parquet ``text`` column is read a record batch at a time, tokenised, and streamed into an
Arrow IPC file, which Hugging Face ``datasets`` memory-maps (``Dataset.from_file``) as its own
cache files are. The file is named by what decides the ids (the tokenizer's definition,
max_length, and the Parquet file's path, size and mtime), so stages and ranks that read the
same split with the same tokenizer tokenise it once, and nothing else ever reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from finetune_core.data.prepare import TEXT
from finetune_core.model.batching import ArrowTokens, Encoded

READ_ROWS = 8192  # texts tokenised per step: bounds the memory of the pass, whatever the file's size
FORMAT = 1  # bump when the file's layout changes


def tokenizer_identity(tokenizer) -> str:
    """A fast tokenizer's whole definition (vocabulary, normaliser, special tokens), less the
    truncation/padding state that calling it leaves behind; a slow one's name or files."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        from finetune_core.model.features import backbone_identity

        definition = backbone_identity(tokenizer.name_or_path)
    else:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
    payload = [
        type(tokenizer).__name__,
        definition,
        getattr(tokenizer, "truncation_side", "right"),
        bool(getattr(tokenizer, "split_special_tokens", False)),
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def tokens_key(tokenizer, parquet_path: Path, max_length: int) -> str:
    stat = parquet_path.stat()
    payload = [
        tokenizer_identity(tokenizer),
        max_length,
        str(parquet_path.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        FORMAT,
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]


def _write_tokens(tokenizer, parquet_path: Path, max_length: int, target: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("input_ids", pa.list_(pa.int32()))])
    scratch = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(scratch), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in pq.ParquetFile(parquet_path).iter_batches(batch_size=READ_ROWS, columns=[TEXT]):
                ids = tokenizer(batch.column(0).to_pylist(), truncation=True, max_length=max_length)["input_ids"]
                writer.write_batch(pa.record_batch([pa.array(ids, type=schema.field(0).type)], schema=schema))
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    scratch.replace(target)  # atomic: a concurrent reader (another rank) never sees half a file


def encode_file(tokenizer, parquet_path: str | Path, max_length: int, cache_dir: str | Path) -> Encoded:
    """The same ids as ``encode(tokenizer, texts, max_length)``, memory-mapped from ``cache_dir``."""
    parquet_path = Path(parquet_path)
    target = Path(cache_dir) / f"{tokens_key(tokenizer, parquet_path, max_length)}.arrow"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_tokens(tokenizer, parquet_path, max_length, target)
    import datasets  # heavy import, only when a split is actually read

    tokens = datasets.Dataset.from_file(str(target), in_memory=False)  # reads the IPC stream format written above
    return Encoded(input_ids=ArrowTokens(tokens.data.table.column("input_ids")), pad_id=tokenizer.pad_token_id or 0)
