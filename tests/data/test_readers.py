"""Unreadable input fails before any parser or GX runs, with one message naming the file and line."""

import json

import pandas as pd
import pytest

from finetune_core.data.readers import check_readable
from finetune_core.errors import DataError
from tests.tables import read_table

GOOD_CSV = "review,sentiment\ngreat film,pos\ndull film,neg\n"


def _write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


CASES = [
    ("empty.csv", "", r"empty\.csv: file is empty"),
    ("header.csv", "review,sentiment\n", r"header\.csv: has a header but no data rows"),
    ("header.tsv", "review\tsentiment\n\n", r"header\.tsv: has a header but no data rows"),
    (
        "latin1.csv",
        "review,sentiment\nok,pos\ncaf\xe9 cr\xe8me,pos\n".encode("latin-1"),
        r"latin1\.csv: not valid UTF-8 at line 3 \(byte offset \d+\)",
    ),
    (
        "garbage.csv",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        r"garbage\.csv: looks binary \(NUL byte",
    ),
    (
        "ragged.csv",
        "review,sentiment\nfine,pos\ntoo,many,fields\n",
        r"ragged\.csv: line 3 has 3 fields; the header has 2",
    ),
    ("ragged.tsv", "review\tsentiment\nfine\tpos\nshort\n", r"ragged\.tsv: line 3 has 1 fields; the header has 2"),
    (
        "broken.jsonl",
        '{"review": "ok", "sentiment": "pos"}\n{"review": oops\n',
        r"broken\.jsonl: line 2 is not valid JSON",
    ),
    ("list.jsonl", '{"review": "ok", "sentiment": "pos"}\n[1, 2]\n', r"list\.jsonl: line 2 is not a JSON object"),
    ("dupcol.csv", "review,sentiment,review\na,pos,b\n", r"dupcol\.csv: the header names column 'review' twice"),
    ("twice.csv", GOOD_CSV + "review,sentiment\nmore,pos\n", r"twice\.csv: line 4 repeats the header"),
    ("fake.parquet", "review,sentiment\n", r"fake\.parquet: not a Parquet file"),
    ("x.txt", GOOD_CSV, r"x\.txt: unsupported extension '\.txt'"),
]


@pytest.mark.parametrize("name, content, message", CASES, ids=[c[0] for c in CASES])
def test_unreadable_file_is_named_with_its_line(tmp_path, name, content, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError, match=message):
        read_table(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*nope\.csv"):
        check_readable(tmp_path / "nope.csv")
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(DataError, match=r"folder\.csv: is a directory; expected a data file"):
        check_readable(folder)


def test_readable_files_pass_in_every_format(tmp_path):
    frame = pd.DataFrame({"review": ["great, really", 'say "hi"', "café"], "sentiment": ["pos", "neg", "pos"]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "a.tsv").write_text(
        "review\tsentiment\n" + "".join(f"{r}\t{s}\n" for r, s in frame.values), encoding="utf-8"
    )
    (tmp_path / "a.jsonl").write_text(
        "\n".join(json.dumps(r) for r in frame.to_dict("records")) + "\n", encoding="utf-8"
    )
    (tmp_path / "b.json").write_text(json.dumps(frame.to_dict("records")), encoding="utf-8")
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    (tmp_path / "bom.csv").write_bytes("\ufeffreview,sentiment\nok,pos\n".encode("utf-8"))
    for name in ("a.csv", "a.tsv", "a.jsonl", "b.json", "a.parquet"):
        read = read_table(tmp_path / name)
        assert read["review"].tolist() == frame["review"].tolist(), name
    assert check_readable(tmp_path / "bom.csv") == "csv"
