"""How the commands print a failure: one line naming the problem, or for an unexpected error the
last frames of its trace; every credential masked (finetune_core/redaction.py)."""

from __future__ import annotations

import traceback

from rich.console import Console
from rich.text import Text

from finetune_core.redaction import redact_text


def print_error(console: Console, exc: BaseException) -> None:
    console.print("[bold red]error:[/]", Text(redact_text(str(exc))), highlight=False, soft_wrap=True)


def print_trace(console: Console, exc: BaseException, frames: int = 8) -> None:
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-frames))
    console.print(Text(redact_text(trace)), highlight=False, soft_wrap=True)
    failure = Text(f"{type(exc).__name__}: {redact_text(str(exc))}")
    console.print("[bold red]failed:[/]", failure, highlight=False, soft_wrap=True)
