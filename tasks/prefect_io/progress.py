"""Training progress in Prefect: one log line per epoch and a progress artifact for the run.

The training tasks report to a ``PrefectProgress`` (the per-epoch line, the artifact moved
through the stage's share of the run) and to whatever the process that runs the flow asked to
watch: ``watching(reporter)`` registers one for the flows it runs, in this process, e.g. the
command line's live bar. Reporters are optional; a flow run without any trains the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from uuid import UUID

from finetune_core.progress import Fanout, ProgressReporter, describe, epoch_line

ARTIFACT_KEY = "finetune-progress"
# The share of the run's progress artifact (percent) each stage's epochs move it through; the
# rest is reading/validating data (before) and evaluating/registering (after). The unfrozen
# stage is where the time goes (demo: frozen 5 s including feature extraction, unfrozen 40 s).
STAGE_SPANS = {"contrastive": (8.0, 10.0), "frozen": (10.0, 25.0), "unfrozen": (25.0, 90.0)}

_watchers: list[ProgressReporter] = []  # registered by the process running the flow (the CLI)


@contextmanager
def watching(reporter: ProgressReporter | None) -> Iterator[None]:
    """Have the training tasks of flows run in this process report to ``reporter`` too."""
    if reporter is None:
        yield
        return
    _watchers.append(reporter)
    try:
        yield
    finally:
        _watchers.remove(reporter)


def start_run_progress() -> UUID | None:
    """The run's progress artifact at 0 %; its id goes to the training tasks."""
    from prefect.artifacts import create_progress_artifact

    try:
        return create_progress_artifact(0.0, key=ARTIFACT_KEY, description="reading and validating data")
    except Exception as exc:  # progress display must never fail a run
        logging.getLogger(__name__).warning("could not create the progress artifact: %s", exc)
        return None


def set_run_progress(artifact_id: UUID | None, percent: float, description: str) -> None:
    if artifact_id is None:
        return
    from prefect.artifacts import update_progress_artifact

    try:
        update_progress_artifact(artifact_id, percent, description=description)
    except Exception as exc:
        logging.getLogger(__name__).warning("could not update the progress artifact: %s", exc)


class PrefectProgress:
    """A stage's epochs as log lines and as progress of the run's artifact; batches are not
    sent (one API call per epoch is enough for a UI)."""

    def __init__(self, stage: str, logger, artifact_id: UUID | None):
        self.stage, self.logger, self.artifact_id = stage, logger, artifact_id
        self.low, self.high = STAGE_SPANS.get(stage, (0.0, 100.0))
        self.task, self.epoch, self.epochs = stage, 0, 0

    def start(self, task: str, total_batches: int, epoch: int = 0, epochs: int = 0) -> None:
        self.task, self.epoch, self.epochs = task, epoch, epochs
        if epoch <= 1:
            set_run_progress(self.artifact_id, self.low, f"{self.stage} stage: {describe(task, epoch, epochs)}")

    def advance(self, batches: int, samples: int, loss: float | None = None) -> None:
        pass

    def end(self, metrics: Mapping[str, float] | None = None) -> None:
        if not self.epochs:  # feature extraction: no line of its own (the stage's summary counts it)
            return
        self.logger.info("%s", epoch_line(self.task, self.epoch, self.epochs, metrics or {}))
        percent = self.low + (self.high - self.low) * self.epoch / self.epochs
        set_run_progress(self.artifact_id, percent, f"{describe(self.task, self.epoch, self.epochs)} done")


def stage_progress(stage: str, logger, artifact_id: UUID | None) -> ProgressReporter:
    """What a training task reports to: Prefect, and the watchers of this process."""
    return Fanout(PrefectProgress(stage, logger, artifact_id), *_watchers)
