"""A Hugging Face hub cache laid out as the hub client lays it out, so hub ids resolve offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(cache: Path, repo_id: str, pooling: dict | None, files: Path | None = None) -> Path:
    """``cache/models--org--name/{refs/main, snapshots/<rev>/...}``; ``pooling=None`` records in
    ``.no_exist`` that the repository has no pooling file, as the hub client does after a 404."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    if files is not None:
        for file in files.iterdir():
            shutil.copy2(file, snapshot / file.name)
    if pooling is None:
        (repo / ".no_exist" / REVISION / "1_Pooling").mkdir(parents=True)
        (repo / ".no_exist" / REVISION / "1_Pooling" / "config.json").touch()
    else:
        (snapshot / "1_Pooling").mkdir()
        (snapshot / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return repo
