"""Where the benchmarks read and write: the repository, the shared data sets beside it, and one
results folder per experiment (``bench/results/<experiment>/``, the source of its docs page)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED_DATA = REPO.parent / "shared" / "data"


def results_file(experiment: str, name: str) -> Path:
    """``bench/results/<experiment>/<name>``, its folder created."""
    folder = RESULTS / experiment
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def invocation(module: str) -> str:
    """The command line that ran this benchmark, as a user would type it again."""
    return " ".join(["python -m", module, shlex.join(sys.argv[1:])]).strip()
