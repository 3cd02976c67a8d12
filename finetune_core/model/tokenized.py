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

from finetune_core.data.chunks import parquet_columns
from finetune_core.data.columns import TEXTS
from finetune_core.model.batching import ArrowTokens, Encoded, tokenize

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


def tokens_key(tokenizer, parquet_path: Path, max_length: int, texts: list[str]) -> str:
    stat = parquet_path.stat()
    payload = [
        tokenizer_identity(tokenizer),
        max_length,
        str(parquet_path.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        FORMAT,
    ]
    payload.extend(texts[1:])  # a pair's ids (text, text_pair) are not the text's alone
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]


def _write_tokens(tokenizer, parquet_path: Path, max_length: int, target: Path, texts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids_type = pa.list_(pa.int32())
    scratch = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        sink, writer = pa.OSFile(str(scratch), "wb"), None
        with sink:
            for batch in pq.ParquetFile(parquet_path).iter_batches(batch_size=READ_ROWS, columns=texts):
                ids, types = tokenize(tokenizer, [batch.column(c).to_pylist() for c in texts], max_length)
                arrays = [pa.array(ids, type=ids_type)] + ([] if types is None else [pa.array(types, type=ids_type)])
                names = ["input_ids", "token_type_ids"][: len(arrays)]
                if writer is None:  # the schema follows the tokenizer: segment ids only where it makes them
                    writer = pa.ipc.new_stream(sink, pa.schema([(n, ids_type) for n in names]))
                writer.write_batch(pa.record_batch(arrays, names=names))
            if writer is None:  # no rows: an empty file of the single-text layout
                writer = pa.ipc.new_stream(sink, pa.schema([("input_ids", ids_type)]))
            writer.close()
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    scratch.replace(target)  # atomic: a concurrent reader (another rank) never sees half a file


def encode_file(tokenizer, parquet_path: str | Path, max_length: int, cache_dir: str | Path) -> Encoded:
    """The same ids as ``encode_columns(tokenizer, columns, max_length)`` of the prepared file's
    text columns (``text``, and ``text_pair`` for sentence pairs), memory-mapped from ``cache_dir``."""
    parquet_path = Path(parquet_path)
    texts = [c for c in TEXTS if c in parquet_columns(parquet_path)]
    target = Path(cache_dir) / f"{tokens_key(tokenizer, parquet_path, max_length, texts)}.arrow"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_tokens(tokenizer, parquet_path, max_length, target, texts)
    import datasets  # heavy import, only when a split is actually read

    table = datasets.Dataset.from_file(str(target), in_memory=False).data.table  # the IPC stream written above
    types = ArrowTokens(table.column("token_type_ids")) if "token_type_ids" in table.column_names else None
    return Encoded(
        input_ids=ArrowTokens(table.column("input_ids")), pad_id=tokenizer.pad_token_id or 0, token_type_ids=types
    )
