"""The run directory's layout, owned here alone: every path a run writes under its directory.
Flows create one ``RunLayout`` and hand it to tasks, which never spell a file name themselves.

    RUN_DIR/
      run.json                    config hash and MLflow run id (resume)
      raw/  validation/  data/    read files, validation reports (Data Docs), prepared splits
      selection/                  candidates' sample features (backbone selection)
      frozen/  model/             stage-1 model, final model (logged to MLflow)
      checkpoints/<stage>/        per-epoch training state
      test_predictions.parquet    served predictions on the test split (gates, review)
      champion_predictions.parquet
      review/                     plots, reports and worst examples for reviewers
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from finetune_core.durable import read_json_or_none, write_json_atomic


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def selection(self) -> Path:
        return self.root / "selection"

    @property
    def contrastive(self) -> Path:
        """The encoder tuned on pairs (strategy contrastive): the frozen stage's backbone."""
        return self.root / "contrastive"

    @property
    def frozen(self) -> Path:
        return self.root / "frozen"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def test_predictions(self) -> Path:
        return self.root / "test_predictions.parquet"

    @property
    def champion_predictions(self) -> Path:
        return self.root / "champion_predictions.parquet"

    @property
    def review(self) -> Path:
        return self.root / "review"


# --- Which run directory a run uses --------------------------------------------------------
#
# A run's directory is keyed by what determines its result: the configuration's hash, the
# input files' content and an optional run key. Re-running the same work after a crash (a
# Prefect flow retry, or the deployment run again after its worker was killed) finds the
# unfinished directory and continues it, in the same MLflow run, from its last finished
# epoch. A finished directory is never reused: the same work run again gets `KEY-2`, `KEY-3`.
#
# Liveness is an exclusive `flock` on `claim.lock`, held while the run lives and released by
# the kernel when its process dies, kill -9 included, so a crashed run's directory is free at
# once and a live one is never taken. (flock is per host: directories on a network file system
# shared by several hosts need the run key to tell concurrent runs apart.)


def run_dir_key(config_hash: str, inputs_digest: str, key: str | None = None) -> str:
    payload = json.dumps({"config": config_hash, "inputs": inputs_digest, "key": key or ""}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def inputs_digest(paths: list[Path | str | None]) -> str:
    """Content hash of the input files (streamed; a missing file hashes as its name only, and
    the pipeline reports it by name when it reads it)."""
    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        digest.update(str(path).encode())
        if Path(path).is_file():
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def read_record(layout: RunLayout) -> dict | None:
    """The run's record; None when there is none or it cannot be read (not a run to continue)."""
    record = read_json_or_none(layout.record)
    return record if isinstance(record, dict) else None


def write_record(layout: RunLayout, **fields) -> dict:
    """Merge ``fields`` into the run's record, written atomically."""
    record = {**(read_record(layout) or {}), **fields}
    write_json_atomic(layout.record, record)
    return record


@dataclass
class RunClaim:
    """A run directory held by this process: ``record`` is the unfinished run found there
    (to resume), or None for a new one."""

    layout: RunLayout
    record: dict | None
    lock: object

    def release(self) -> None:
        _unlock(self.lock)


def _unlock(handle) -> None:
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def _try_lock(root: Path):
    handle = open(root / "claim.lock", "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a live run holds it
        handle.close()
        return None
    return handle


@contextmanager
def claim_run_dir(output_dir: Path, key: str):
    """The first of ``KEY``, ``KEY-2``, ... that is unfinished and not held by a live run."""
    for attempt in itertools.count(1):
        root = (Path(output_dir) / (key if attempt == 1 else f"{key}-{attempt}")).resolve()
        root.mkdir(parents=True, exist_ok=True)
        lock = _try_lock(root)
        if lock is None:
            continue
        layout = RunLayout(root)
        record = read_record(layout)
        if record is not None and record.get("finished"):
            _unlock(lock)
            continue
        claim = RunClaim(layout, record if record and record.get("mlflow_run_id") else None, lock)
        try:
            yield claim
        finally:
            claim.release()
        return
