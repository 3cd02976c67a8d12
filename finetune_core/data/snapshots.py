"""Dated data snapshots for scheduled retraining: ``INCOMING/<YYYY-MM-DD>/{train,test}[,validation].<ext>``.

The newest snapshot is the last directory name in sorted order that holds a train and a test
file (ISO dates sort chronologically). Its fingerprint hashes the files' names and bytes, so a
retrain can tell whether a registered version was already trained on exactly this data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel

from finetune_core.data.readers import FORMATS
from finetune_core.errors import DataError


class Snapshot(BaseModel):
    name: str
    files: dict[str, str]  # split -> path
    fingerprint: str


def _split_file(directory: Path, split: str) -> Path | None:
    found = [directory / f"{split}{ext}" for ext in FORMATS if (directory / f"{split}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{directory}: more than one {split} file ({', '.join(p.name for p in found)})")
    return found[0] if found else None


def fingerprint(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for split in sorted(files):
        digest.update(split.encode())
        with open(files[split], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def newest_snapshot(incoming: str | Path) -> Snapshot:
    root = Path(incoming)
    if not root.is_dir():
        raise DataError(f"incoming data directory not found: {root}")
    for directory in sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name, reverse=True):
        files = {split: _split_file(directory, split) for split in ("train", "validation", "test")}
        if files["train"] is not None and files["test"] is not None:
            present = {split: str(path) for split, path in files.items() if path is not None}
            return Snapshot(name=directory.name, files=present, fingerprint=fingerprint(present))
    raise DataError(f"{root}: no snapshot directory holds both a train and a test file")
