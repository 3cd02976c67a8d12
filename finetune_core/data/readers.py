"""Read one data file, or fail with one message that names the file and the line.

A scheduled run reads whatever the last export wrote. Before any parser sees a file we check
what parsers report badly or not at all: a missing file or a directory, an empty file, binary
content, text that is not UTF-8, a header without rows, a header naming a column twice, a
header repeated as a data row (two exports concatenated), ragged CSV/TSV rows, a JSONL line
that is not a JSON object. The structural scan streams the file line by line (csv, json in C).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from finetune_core.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_SNIFF_BYTES = 1 << 16


def file_format(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported extension {path.suffix!r} (use one of {', '.join(FORMATS)})")
    return kind


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a data file")
    if not path.is_file():
        raise DataError(f"{path}: is not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")


def _decode_utf8(path: Path) -> str:
    raw = path.read_bytes()
    head = raw[:_SNIFF_BYTES]
    nul = head.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path}: looks binary (NUL byte at offset {nul}); expected UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not valid UTF-8 at line {line} (byte offset {exc.start}); re-export the file as UTF-8"
        ) from None


def _text_lines(path: Path) -> Iterator[str]:
    """The file's lines decoded one at a time (newlines kept): the scan never holds the whole
    file. UTF-8 never splits a character across lines, so decoding per line is exact."""
    with path.open("rb") as handle:
        nul = handle.read(_SNIFF_BYTES).find(b"\x00")
        if nul >= 0:
            raise DataError(f"{path}: looks binary (NUL byte at offset {nul}); expected UTF-8 text")
        handle.seek(0)
        offset = 0
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}: not valid UTF-8 at line {number} (byte offset {offset + exc.start}); "
                    "re-export the file as UTF-8"
                ) from None
            offset += len(raw)
            yield text.removeprefix("\ufeff") if number == 1 else text


def _csv_rows(path: Path, lines: Iterator[str]) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(lines)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({exc})") from None


def _check_header(path: Path, header: list[str]) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: the header names column {name!r} twice")
        seen.add(name)


def _scan_delimited(path: Path, kind: str) -> None:
    lines = _text_lines(path)
    if kind == "tsv":  # GLUE-style TSV: quotes are ordinary characters
        numbered = enumerate((line.rstrip("\n").rstrip("\r").split("\t") for line in lines), start=1)
    else:
        numbered = _csv_rows(path, lines)
    header: list[str] | None = None
    data_rows = 0
    for line, row in numbered:
        if not row or row == [""]:
            continue  # blank lines are skipped by every parser we use
        if header is None:
            header = row
            _check_header(path, header)
            continue
        if row == header:
            raise DataError(f"{path}: line {line} repeats the header (two exports concatenated?)")
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields; the header has {len(header)}")
        data_rows += 1
    if header is None:
        raise DataError(f"{path}: file has no header and no rows")
    if data_rows == 0:
        raise DataError(f"{path}: has a header but no data rows")


def _scan_json(path: Path) -> None:
    first = next((line for line in _text_lines(path) if line.strip()), "")
    if first.lstrip().startswith("["):  # a JSON array of records, not JSON lines: parsed whole
        try:
            records = json.loads(_decode_utf8(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {exc.lineno} is not valid JSON ({exc.msg})") from None
        if not records:
            raise DataError(f"{path}: the JSON array has no records")
        if not all(isinstance(r, dict) for r in records):
            raise DataError(f"{path}: every element of the JSON array must be an object")
        return
    rows = 0
    for line_number, line in enumerate(_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {line_number} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {line_number} is not a JSON object")
        rows += 1
    if rows == 0:
        raise DataError(f"{path}: has no JSON records")


def _check_parquet(path: Path) -> None:
    with path.open("rb") as handle:
        if handle.read(4) != b"PAR1":
            raise DataError(f"{path}: not a Parquet file (missing the PAR1 magic bytes)")


def check_readable(path: Path) -> str:
    """Raise DataError naming the file (and line) if ``path`` cannot be read; return its format."""
    path = Path(path)
    _check_exists(path)
    kind = file_format(path)
    if kind == "parquet":
        _check_parquet(path)
        return kind
    if kind == "jsonl":
        _scan_json(path)
    else:
        _scan_delimited(path, kind)
    return kind


def read_to_parquet(path: Path, target: Path) -> None:
    """Read one file with `datasets` into its memory-mapped Arrow cache, then write it to
    ``target`` as Parquet batch by batch: the file is never held in memory whole."""
    _load(Path(path)).to_parquet(str(target), batch_size=65_536)  # one row group per batch


def _load(path: Path):
    import datasets  # heavy import, only when data is actually read

    kind = check_readable(path)
    builder, options = kind, {}
    if kind == "tsv":
        builder, options = "csv", {"sep": "\t", "quoting": csv.QUOTE_NONE}
    elif kind == "jsonl":
        builder = "json"
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as exc:  # datasets wraps parser errors in several exception types
        cause = exc.__cause__ or exc
        raise DataError(f"{path}: could not be read as {kind}: {type(cause).__name__}: {cause}") from None
    return table
