"""Progress you can watch: what the training loops and feature extraction report, batch by batch.

A ``ProgressReporter`` is an optional callback (Lightning's rule): the loops call ``SILENT``,
which does nothing, unless a caller passes one, and training runs the same either way. A
reporter hears ``start`` (what runs, how many batches; an epoch's number and the stage's epoch
count), ``advance`` once per batch (rows, and the loss value the loop already holds as a float:
reporting adds no device sync) and ``end`` (an epoch's train loss, validation metric and speed).
Rendering lives outside this package: a live bar on the command line, a log line and a progress
artifact in Prefect.

A data-parallel worker is another process: ``relayed`` hands it a picklable reporter whose
events come back through a queue to the reporter in the launching process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol


class ProgressReporter(Protocol):
    def start(self, task: str, total_batches: int, epoch: int = 0, epochs: int = 0) -> None:
        """``task``: what runs ("frozen", "unfrozen", "features: train"); ``epoch`` of ``epochs``
        for a training epoch (0 otherwise)."""

    def advance(self, batches: int, samples: int, loss: float | None = None) -> None:
        """``batches`` more done, holding ``samples`` rows; ``loss``: the last batch's mean loss."""

    def end(self, metrics: Mapping[str, float] | None = None) -> None:
        """The task finished; an epoch reports ``train_loss``, its validation metric and
        ``samples_per_second``."""


class _Silent:
    def start(self, task: str, total_batches: int, epoch: int = 0, epochs: int = 0) -> None:
        pass

    def advance(self, batches: int, samples: int, loss: float | None = None) -> None:
        pass

    def end(self, metrics: Mapping[str, float] | None = None) -> None:
        pass


SILENT: ProgressReporter = _Silent()


class Fanout:
    """Several reporters heard as one, each independently."""

    def __init__(self, *reporters: ProgressReporter):
        self.reporters = [r for r in reporters if r is not None and r is not SILENT]

    def start(self, task: str, total_batches: int, epoch: int = 0, epochs: int = 0) -> None:
        for reporter in self.reporters:
            reporter.start(task, total_batches, epoch, epochs)

    def advance(self, batches: int, samples: int, loss: float | None = None) -> None:
        for reporter in self.reporters:
            reporter.advance(batches, samples, loss)

    def end(self, metrics: Mapping[str, float] | None = None) -> None:
        for reporter in self.reporters:
            reporter.end(metrics)


def describe(task: str, epoch: int = 0, epochs: int = 0) -> str:
    return f"{task} epoch {epoch}/{epochs}" if epochs else task


def epoch_line(task: str, epoch: int, epochs: int, metrics: Mapping[str, float]) -> str:
    """One line per epoch: ``unfrozen epoch 2/3: train_loss 0.41 val_accuracy 0.81 81 samples/s``."""
    parts = [f"{name} {value:.4g}" for name, value in metrics.items() if name != "samples_per_second"]
    if "samples_per_second" in metrics:
        parts.append(f"{metrics['samples_per_second']:.0f} samples/s")
    return f"{describe(task, epoch, epochs)}: {' '.join(parts)}"


class _QueueReporter:
    """Picklable: a spawned worker's events, put on a queue the launching process drains."""

    def __init__(self, queue):
        self.queue = queue

    def start(self, task: str, total_batches: int, epoch: int = 0, epochs: int = 0) -> None:
        self.queue.put(("start", (task, total_batches, epoch, epochs)))

    def advance(self, batches: int, samples: int, loss: float | None = None) -> None:
        self.queue.put(("advance", (batches, samples, loss)))

    def end(self, metrics: Mapping[str, float] | None = None) -> None:
        self.queue.put(("end", (dict(metrics) if metrics is not None else None,)))


@contextmanager
def relayed(reporter: ProgressReporter) -> Iterator[ProgressReporter]:
    """A reporter to hand to spawned worker processes; its events reach ``reporter`` here."""
    if reporter is SILENT:
        yield SILENT
        return
    import multiprocessing

    queue = multiprocessing.get_context("spawn").SimpleQueue()  # torch.multiprocessing.spawn's context

    def drain() -> None:
        while (event := queue.get()) is not None:
            name, args = event
            try:
                getattr(reporter, name)(*args)
            except Exception:  # a display failing must neither stop training nor block the queue
                pass

    thread = threading.Thread(target=drain, name="progress-relay", daemon=True)
    thread.start()
    try:
        yield _QueueReporter(queue)
    finally:
        queue.put(None)
        thread.join()
