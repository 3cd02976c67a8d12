"""How the commands print a failure: one line naming the problem, or for an unexpected error the
last frames of its trace; and a warning in one line; every credential masked (finetune_core/redaction.py)."""

from __future__ import annotations

import traceback
from pathlib import Path

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


def print_warning(console: Console, message: str) -> None:
    console.print("[bold yellow]warning:[/]", Text(redact_text(message)), highlight=False, soft_wrap=True)


def load_config_printing_warnings(console: Console, path: Path, overrides: list[str]):
    """``load_config``, each retired key it dropped printed as a warning (finetune_core/config/retired.py)."""
    from finetune_core.config.loading import load_config

    notices: list[str] = []
    config = load_config(path, overrides, notices)
    for notice in notices:
        print_warning(console, notice)
    return config
