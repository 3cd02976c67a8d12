"""`finetune review-labels CONFIG`: which train labels are probably wrong, for a dataset someone is
still labelling. It prepares the splits, reads the first backbone candidate's frozen features (the
feature cache's, when a run already extracted them) and runs the label review of `finetune run`
(out-of-fold predictions, confident learning), with no training, tracking or registration; it
prints the most suspect rows and writes OUTPUT_DIR/review-labels-<time>/review/suspect_labels.csv.
Exit 0, or 2 when `validation.suspect_labels: error` and the share flagged is above the limit
(docs/concepts/label-review.md).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.errors import load_config_printing_warnings, print_error

console = Console(stderr=True)
EXIT_BAD_INPUT = 2  # as every `finetune` command: bad configuration or data
SHOWN_ROWS = 20


def review_labels(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="YAML configuration file."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a key: --set data.train=labels.csv."),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Where the prepared data and the CSV go (default: OUTPUT_DIR/review-labels-<time>)."
    ),
) -> None:
    """Only prepare the data and review its train labels; print the most suspect rows."""
    from datetime import datetime, timezone

    from finetune_core.errors import UserInputError

    try:
        config = load_config_printing_warnings(console, config_path, set_ or [])
        from finetune_core.evaluation.suspect_labels import SUSPECTS_FILE, level_message, review_data, suspects_frame

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = out_dir or Path(config.output_dir) / f"review-labels-{stamp}"
        prepared, run, backbone = review_data(config, target)
    except UserInputError as exc:
        print_error(console, exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if run.review is None:
        console.print(f"label review not possible: {run.skipped}", highlight=False)
        return
    path = target / "review" / SUSPECTS_FILE
    _print_suspects(suspects_frame(run.review, prepared), f"{run.review.method}, {run.folds}-fold, on {backbone}")
    above, message = level_message(run.review, config.validation.max_suspect_label_fraction, str(path))
    console.print(message, highlight=False, soft_wrap=True)
    if above and config.validation.suspect_labels == "error":
        console.print("[bold red]error[/]: validation.suspect_labels is error", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT)


def _print_suspects(frame, title: str) -> None:
    table = Table(title=f"suspect labels ({title})")
    for column in frame.columns:
        table.add_column(column, overflow="fold")
    for row in frame.head(SHOWN_ROWS).itertuples(index=False):
        table.add_row(*(str(value) for value in row))
    Console(width=160).print(table)
