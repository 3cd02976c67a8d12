"""A run's logged model, logged once: a run resumed after its model was logged (killed before
registration) finds it by the digest of the model directory it was logged from, instead of
logging a second copy that nothing would register."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

DIGEST_TAG = "finetune.model_dir_digest"
# Rewritten on every export with fresh timings; the graph it names is digested itself.
_NOT_DIGESTED = {"serving/serving.json"}


def model_dir_digest(model_dir: Path) -> str:
    """sha256 over the directory's files (relative path and bytes), in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        relative = path.relative_to(model_dir).as_posix()
        if relative in _NOT_DIGESTED:
            continue
        digest.update(relative.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def logged_already(run_id: str, digest: str) -> str | None:
    """The URI of a model this run logged completely from a directory with ``digest``, or None."""
    client = MlflowClient()
    experiment = client.get_run(run_id).info.experiment_id
    for model in client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'"):
        if model.status == LoggedModelStatus.READY and model.tags.get(DIGEST_TAG) == digest:
            return model.model_uri
    return None
