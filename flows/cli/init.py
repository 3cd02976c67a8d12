"""`finetune init DATA_FILE --test FILE`: propose a configuration for a data file and write it.

It reads the first rows of the file, decides the text column(s), the label column and the task
(finetune_core.data.schema_guess), prints each decision with its reason and writes a short
commented configuration that passes `finetune validate` (docs/how-to/own-data.md). When it cannot
decide, it exits 2 naming the option to pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from flows.cli.errors import print_error

console = Console(stderr=True)
EXIT_BAD_INPUT = 2  # as every `finetune` command: bad configuration or data


def _as_written(path: Path, folder: Path) -> str:
    """``path`` as the written config names it: relative to the config's folder (the loader resolves
    it there) unless that climbs more than one folder up; then absolute."""
    absolute = path.resolve()
    try:
        relative = Path(os.path.relpath(absolute, folder.resolve()))
    except ValueError:  # another drive on Windows
        return str(absolute)
    return relative.as_posix() if relative.parts[:2] != ("..", "..") else str(absolute)


def _check_columns(sample, proposal, path: Path) -> None:
    from finetune_core.errors import DataError

    wanted = [proposal.text_column, proposal.text_pair_column, proposal.label_column]
    missing = [name for name in wanted if name is not None and name not in sample.columns]
    if missing:
        raise DataError(f"{path}: column(s) {', '.join(map(repr, missing))} missing (the training file has them)")


def _no_test_file(train: Path) -> str:
    siblings = [p.name for p in sorted(train.parent.glob(f"test*{train.suffix}")) if p != train]
    hint = f" ({siblings[0]} lies beside {train.name})" if siblings else ""
    return (
        "a labelled test file is required (data.test): the validation split is held out of the training file, "
        f"the test split is not{hint}; pass --test FILE"
    )


def _print_decisions(proposal, train: Path, rows: int) -> None:
    typer.echo(f"decided from the first {rows} rows of {train}:")
    for key, value, reason in proposal.decisions():
        typer.echo(f"  {key}: {value}\n      why: {reason}")


def init(
    data_file: Path = typer.Argument(..., metavar="DATA_FILE", help="Training file (CSV, TSV, JSONL or Parquet)."),
    test: Path | None = typer.Option(None, "--test", help="Labelled test file of the final evaluation (required)."),
    output: Path = typer.Option(Path("finetune.yaml"), "-o", "--output", help="Where to write the configuration."),
    text_column: str | None = typer.Option(None, "--text-column", help="Column holding the input text."),
    text_pair_column: str | None = typer.Option(None, "--text-pair-column", help="Second text of a sentence pair."),
    label_column: str | None = typer.Option(None, "--label-column", help="Column holding the label or target."),
    task: str | None = typer.Option(None, "--task", help="classification, regression or multilabel."),
    label_separator: str | None = typer.Option(
        None, "--label-separator", help="Multilabel: the labels are one string split on this (e.g. '|')."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file if it exists."),
) -> None:
    """Propose a configuration for a data file: columns and task, each with its reason."""
    import yaml

    from finetune_core.config.init_proposal import render_config
    from finetune_core.config.loading import validate_config
    from finetune_core.data.schema_guess import guess_schema, read_sample
    from finetune_core.errors import UserInputError

    try:
        if output.exists() and not force:
            raise UserInputError(f"{output} exists; pass --force to overwrite it, or -o to write elsewhere")
        sample = read_sample(data_file)
        proposal = guess_schema(
            sample, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
            task=task, label_separator=label_separator,
        )  # fmt: skip
        _print_decisions(proposal, data_file, len(sample))
        if test is None:
            raise UserInputError(_no_test_file(data_file))
        _check_columns(read_sample(test), proposal, test)
        absolute = render_config(proposal, train=str(data_file.resolve()), test=str(test.resolve()))
        validate_config(yaml.safe_load(absolute))  # what is written must load
    except UserInputError as exc:
        print_error(console, exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    folder = output.parent
    folder.mkdir(parents=True, exist_ok=True)
    written = render_config(proposal, train=_as_written(data_file, folder), test=_as_written(test, folder))
    output.write_text(written, encoding="utf-8")
    typer.echo(f"  validation: 10% of {data_file.name} held out (data.validation_fraction); test: {test}")
    console.print(f"wrote {escape(str(output))}; next: finetune validate {escape(str(output))}", highlight=False)
