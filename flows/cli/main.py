"""`finetune` command line. Exit codes: 0 success, 1 unexpected error, 2 bad configuration
or data (the message names the field, file or column), 3 rejected by an evaluation gate, 4 the
MLflow tracking server is unreachable (the message names its URI).

Why 4 and not 2: the configuration may be right and the server merely down; a scheduler or a
wrapper script can retry on 4 (run again once the server answers) and never on 2 (fix the input).

Heavy imports (torch, transformers, prefect, mlflow) happen inside commands, so
``finetune --help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.errors import load_config_printing_warnings, print_error, print_trace
from flows.cli.run_summary import browse_hint, summary_table, write_summary_json

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
console = Console(stderr=True)
EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_GATE, EXIT_TRACKING_DOWN = 0, 1, 2, 3, 4


def _print_version(requested: bool) -> None:
    if requested:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"finetune-pipeline {version('finetune-pipeline')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("finetune-pipeline (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the installed version and exit."
    ),
) -> None:
    """Fine-tune, validate, score and manage registered models."""


def _quiet_third_parties() -> None:
    from finetune_core.environment import apply_defaults

    apply_defaults()


class _NoTracebackForUserErrors(logging.Filter):
    """Bad input and an unreachable tracking server are reported in one line by the CLI; Prefect's
    console log keeps the message but drops the traceback (the Prefect API still records it in full)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from finetune_core.errors import UserInputError
        from tasks.mlflow_io.tracking_server import TrackingUnavailable

        if record.exc_info and isinstance(record.exc_info[1], (UserInputError, TrackingUnavailable)):
            record.exc_info, record.exc_text = None, None
        return True


def _shorten_prefect_console_errors() -> None:
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ == "PrefectConsoleHandler":
                handler.addFilter(_NoTracebackForUserErrors())


def _load(config_path: Path, overrides: list[str]):
    return load_config_printing_warnings(console, config_path, overrides)


def _print_user_error(exc: Exception) -> None:
    report = getattr(exc, "report", None)
    if report is not None:  # a failed data validation: the table says more than the message
        from finetune_core.validation.report import table

        console.print(table(report), highlight=False, soft_wrap=True, markup=False)
        if report.data_docs:
            console.print(f"report: {report.data_docs}", highlight=False, soft_wrap=True)
        return
    print_error(console, exc)


@app.command()
def run(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="YAML configuration file."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a key: --set training.batch_size=16."),
    summary_json: Path | None = typer.Option(None, "--summary-json", help="Write metrics, timings and ids here."),
    resume: Path | None = typer.Option(
        None, "--resume", metavar="RUN_DIR", help="Continue a killed run from its last epoch."
    ),
) -> None:
    """Run the fine-tuning flow: validate, train frozen then unfrozen, evaluate, register."""
    from finetune_core.config.tracking import credentials_to_environment
    from finetune_core.errors import UserInputError

    _quiet_third_parties()
    from tasks.mlflow_io.tracking_server import TrackingUnavailable

    try:
        config = credentials_to_environment(_load(config_path, set_ or []))  # never a Prefect parameter
        from flows.cli.prefect_api import start_temporary_api, wait_for_api

        api = start_temporary_api()  # without PREFECT_API_URL: boots while the imports below run
        from flows.cli.progress_bar import live_progress
        from flows.cli.warmup import warm_for
        from flows.finetune import finetune
        from tasks.prefect_io.progress import watching

        _shorten_prefect_console_errors()
        wait_for_api(api, meanwhile=lambda: warm_for(config))  # the first tasks' imports, while it boots
        # a live bar on a terminal; in a log (CI, a pipe), the training tasks' one line per epoch
        with live_progress(console) as bar, watching(bar):
            result = finetune(config, resume=str(resume) if resume else None)
    except UserInputError as exc:
        _print_user_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except TrackingUnavailable as exc:
        print_error(console, exc)
        raise typer.Exit(EXIT_TRACKING_DOWN) from None
    except Exception as exc:  # anything else is a bug or an environment failure: keep the trace
        print_trace(console, exc)
        raise typer.Exit(EXIT_ERROR) from None
    console.print(summary_table(result))
    console.print(browse_hint(result.tracking_uri), highlight=False, soft_wrap=True)
    if summary_json is not None:
        write_summary_json(summary_json, result)
        console.print(f"summary written to {summary_json}", highlight=False, soft_wrap=True)
    if not result.gate_passed:
        console.print(
            "[bold yellow]gates failed[/]: " + "; ".join(result.gate_reasons), highlight=False, soft_wrap=True
        )
        raise typer.Exit(EXIT_GATE)


@app.command()
def validate(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="YAML configuration file."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a key: --set validation.min_train_rows=100."),
    report_dir: Path | None = typer.Option(
        None, "--report-dir", help="Where Data Docs and JSON results go (default: OUTPUT_DIR/validation-<time>)."
    ),
) -> None:
    """Only validate the data (Great Expectations): exit 0 when no `error` check fails, else 2."""
    from datetime import datetime, timezone

    from finetune_core.errors import UserInputError

    _quiet_third_parties()
    try:
        config = _load(config_path, set_ or [])
        from finetune_core.data.prepare import read_splits
        from finetune_core.validation.report import table
        from finetune_core.validation.suites import validate_raw

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = report_dir or Path(config.output_dir) / f"validation-{stamp}"
        report = validate_raw(config, read_splits(config, target / "raw"), target)
    except UserInputError as exc:
        _print_user_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    typer.echo(table(report))
    if report.data_docs:
        console.print(f"report: {report.data_docs}", highlight=False, soft_wrap=True)
    if not report.passed:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def select(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="YAML configuration file."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override a key: --set backbone.selection_sample=500."),
) -> None:
    """Only rank `backbone.candidates` (LogME or probe on frozen features) and print the ranking."""
    import tempfile

    from finetune_core.errors import UserInputError

    _quiet_third_parties()
    try:
        config = _load(config_path, set_ or [])
        from finetune_core.data.prepare import prepare_splits
        from finetune_core.selection.candidates import rank_backbones

        with tempfile.TemporaryDirectory() as scratch:
            prepared = prepare_splits(config, Path(scratch) / "data")
            result = rank_backbones(config, prepared, Path(scratch) / "selection")
    except UserInputError as exc:
        _print_user_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    table = Table(title=f"backbone ranking ({result.selected.metric}, {result.seconds:.1f} s)")
    rows = result.table()
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console(width=200).print(table)


@app.command("show-config")
def show_config(
    config_path: Path = typer.Argument(..., metavar="CONFIG"),
    set_: list[str] | None = typer.Option(None, "--set"),
    show_all: bool = typer.Option(False, "--all", help="Print every key, defaults included."),
) -> None:
    """Validate a configuration and print what differs from the defaults (--all: every key)."""
    import yaml

    from finetune_core.config.non_defaults import non_defaults
    from finetune_core.errors import UserInputError
    from finetune_core.redaction import redact_values

    try:
        config = _load(config_path, set_ or [])
    except UserInputError as exc:
        print_error(console, exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    shown = config.for_record() if show_all else redact_values(non_defaults(config))  # no credentials printed
    typer.echo(yaml.safe_dump(shown, sort_keys=False), nl=False)


from flows.cli.init import init  # noqa: E402  (a starter configuration for a data file)
from flows.cli.predict import predict  # noqa: E402  (batch scoring)
from flows.cli.registry import models, promote  # noqa: E402  (registry commands)
from flows.cli.review_labels import review_labels  # noqa: E402  (label review of a dataset being labelled)
from flows.cli.tune import tune  # noqa: E402  (hyperparameter search)

app.command()(promote)
app.command()(models)
app.command()(predict)
app.command()(init)
app.command()(tune)
app.command("review-labels")(review_labels)

if __name__ == "__main__":
    app()
