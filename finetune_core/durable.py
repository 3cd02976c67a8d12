"""Durable records and cache files: what a run writes and later reads back to decide what is done.

Every such file goes through here. A record is written to a unique temporary name in its own
directory, flushed to disk and renamed over its path (then the directory is flushed), so a kill at
any point leaves either the old file or the new one, never half of one. A reader treats a missing
or unreadable record as "not done" (the work is redone), never as a crash. See docs/concepts/resume.md.

Cache files shared between runs (frozen features, lower-layer states) add an index beside each
file, ``<file>.index.json``, with its size and a checksum: a file whose index is missing or does
not match is not read, it is rebuilt. Two processes writing the same key never see each other's
partial file (each writes its own temporary name) and take a per-key lock only to rename their
file and write its index together.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

INDEX_SUFFIX = ".index.json"
# The checksum reads 16 windows of 1 MiB spread over the file (all of a file up to 16 MiB): it tells
# a truncated, torn or other writer's file from the indexed one without rereading GBs on every open.
WINDOWS, WINDOW_BYTES = 16, 1 << 20


def scratch_name(path: Path) -> Path:
    """A temporary name beside ``path``, unique to this writer (process and call)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def writing(path: Path | str) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` through: on leaving the block it is flushed, synced and
    renamed into place; on an exception the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_name(path)
    try:
        with open(scratch, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_atomic(path: Path | str, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` all at once or not at all."""
    with writing(path) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: Path | str, value: Any) -> Path:
    return write_atomic(path, json.dumps(value, indent=2))


def read_json_or_none(path: Path | str) -> Any | None:
    """The JSON at ``path``; None when it is missing or unreadable (cut by a kill, or foreign)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError, json.JSONDecodeError):
        return None


# --- Cache files: an index with size and checksum, a per-key lock -------------------------------


def index_path(path: Path) -> Path:
    return path.with_name(path.name + INDEX_SUFFIX)


def file_fingerprint(handle: IO[bytes]) -> dict:
    """Size and a blake2b of up to ``WINDOWS`` windows of the open file (see WINDOWS above)."""
    size = os.fstat(handle.fileno()).st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    last = max(size - WINDOW_BYTES, 0)
    starts = sorted({last * i // (WINDOWS - 1) for i in range(WINDOWS)}) if size > WINDOWS * WINDOW_BYTES else [0]
    for start in starts:
        handle.seek(start)
        digest.update(handle.read(WINDOW_BYTES if len(starts) > 1 else size))
    return {"size": size, "blake2b": digest.hexdigest()}


@contextmanager
def _key_lock(path: Path, exclusive: bool) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield  # closing the file releases the lock, as the kernel does for a killed process


@contextmanager
def verified_cache(path: Path | str) -> Iterator[bool]:
    """Whether the cache file at ``path`` matches its index; open it inside the block (a writer
    renaming a new file in meanwhile waits for it). False: missing, partial or foreign: rebuild."""
    path = Path(path)
    if not path.is_file():  # no lock file made for a key never written
        yield False
        return
    with _key_lock(path, exclusive=False):
        index = read_json_or_none(index_path(path))
        try:
            with open(path, "rb") as handle:
                matches = index is not None and file_fingerprint(handle) == index
        except FileNotFoundError:
            matches = False
        yield matches


class CacheWrite:
    """One writer's temporary file for the cache file ``path``. ``commit`` renames it into place
    and writes its index under the key's lock; ``discard`` removes it. A temporary file is locked
    while its writer lives, so leftovers of killed writers are told apart and removed."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(self.path)
        self.scratch = scratch_name(self.path)
        self._held = open(self.scratch, "wb")  # the writer's own name; the writer fills it by path
        fcntl.flock(self._held.fileno(), fcntl.LOCK_EX)

    def commit(self) -> None:
        with open(self.scratch, "rb") as handle:
            os.fsync(handle.fileno())
            fingerprint = file_fingerprint(handle)
        with _key_lock(self.path, exclusive=True):
            os.replace(self.scratch, self.path)
            _fsync_directory(self.path.parent)
            write_json_atomic(index_path(self.path), fingerprint)  # the index commits the file
        self._held.close()

    def discard(self) -> None:
        self.scratch.unlink(missing_ok=True)
        self._held.close()


def remove_abandoned(path: Path) -> None:
    """Temporary files of ``path`` whose writer is gone (its lock is free): killed mid-write."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            handle = open(leftover, "rb")
        except FileNotFoundError:
            continue
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer's
                continue
            leftover.unlink(missing_ok=True)
