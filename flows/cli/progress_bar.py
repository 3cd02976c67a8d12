"""The command line's live progress bar: one row per running step (feature extraction, the
frozen and unfrozen stages' current epoch) with batches done/total, samples/s, loss and the time
left, while stderr is a terminal. Elsewhere (CI logs, a pipe) nothing is drawn: the training
tasks' log lines, one per epoch, are the progress there.

Prefect prints its log lines through its own console; while the bar is live they are routed
above it, so neither garbles the other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from finetune_core.progress import describe


class LiveBar:
    """A ``ProgressReporter`` drawing rich progress rows; each step reuses its row, epoch after epoch."""

    def __init__(self, bar: Progress):
        self.bar, self.rows, self.current = bar, {}, None
        self.started, self.samples = time.perf_counter(), 0

    def start(self, task: str, total_batches: int, epoch: int = 0, epochs: int = 0) -> None:
        description = describe(task, epoch, epochs)
        if task in self.rows:
            self.bar.reset(self.rows[task], total=total_batches, description=description, rate="", loss="")
        else:
            self.rows[task] = self.bar.add_task(description, total=total_batches, rate="", loss="")
        self.current, self.started, self.samples = self.rows[task], time.perf_counter(), 0

    def advance(self, batches: int, samples: int, loss: float | None = None) -> None:
        self.samples += samples
        rate = self.samples / max(time.perf_counter() - self.started, 1e-9)
        fields = {"rate": f"{rate:.0f} samples/s"}
        if loss is not None:
            fields["loss"] = f"loss {loss:.4f}"
        self.bar.update(self.current, advance=batches, **fields)

    def end(self, metrics: Mapping[str, float] | None = None) -> None:
        pass  # the row stays, complete, until its step's next epoch


class _AboveTheBar:
    """Stands in for a Prefect console handler's console while the bar is live: each log line,
    styled as Prefect styles it, is printed above the bar."""

    def __init__(self, styled: Console, live: Console):
        self.styled, self.live = styled, live

    def print(self, message, **kwargs) -> None:
        with self.styled.capture() as captured:
            self.styled.print(message, **kwargs)
        self.live.print(Text.from_ansi(captured.get()), end="", soft_wrap=True)


def _prefect_console_handlers() -> list[logging.Handler]:
    handlers = []
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        handlers += [h for h in logging.getLogger(name).handlers if type(h).__name__ == "PrefectConsoleHandler"]
    return handlers


@contextmanager
def live_progress(console: Console) -> Iterator[LiveBar | None]:
    """A live bar on ``console`` when it is a terminal (None otherwise), Prefect's log lines above it."""
    if not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,  # gone at the end: the epoch lines above it and the summary table stay
    )
    handlers = _prefect_console_handlers()
    saved = [handler.console for handler in handlers]
    with bar:
        for handler, styled in zip(handlers, saved):
            handler.console = _AboveTheBar(styled, console)
        try:
            yield LiveBar(bar)
        finally:
            for handler, styled in zip(handlers, saved):
                handler.console = styled
