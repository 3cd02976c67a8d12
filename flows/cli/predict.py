"""`finetune predict MODEL_URI INPUT OUTPUT`: score a data file with a registered (or logged) model.

The model is any MLflow pyfunc URI (`models:/NAME@champion`, `models:/NAME/3`, `runs:/RUN_ID/model`),
found in the store `finetune run` uses (finetune_core.config.tracking); ``--runtime`` chooses ONNX
Runtime or PyTorch (default: ONNX Runtime when the model holds a graph that passed parity,
docs/how-to/serving.md). The file is read and
written a batch at a time (finetune_core.data.batch_io), so its size is bounded by disk, not
memory; OUTPUT holds the input's columns, in order, with the model's columns next to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from flows.cli.errors import print_error, print_trace

console = Console(stderr=True)
EXIT_ERROR, EXIT_BAD_INPUT, EXIT_TRACKING_DOWN = 1, 2, 4  # as `finetune run`
_MODEL_HELP = "models:/NAME@champion, models:/NAME/VERSION or runs:/RUN_ID/model"


class Runtime(str, Enum):  # finetune_core.serving.runtime.RUNTIMES, without importing pandas for --help
    auto = "auto"
    onnx = "onnx"
    torch = "torch"


def _load_model(model_uri: str):
    """The pyfunc model; an unknown model, version, alias or run is the user's to fix (exit 2)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from transformers.utils import logging as transformers_logging

    from finetune_core.errors import ConfigError

    transformers_logging.disable_progress_bar()  # the scoring bar is the only one (no "Loading weights")
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise ConfigError(f"model {model_uri}: {exc.message}") from None
        raise
    except OSError as exc:  # runs:/ paths that name no artifact
        raise ConfigError(f"model {model_uri}: {exc}") from None


def runtime_params(model, model_uri: str, runtime: str) -> dict | None:
    """MLflow ``params`` choosing ``runtime``; a model logged before runtimes existed runs PyTorch only."""
    from finetune_core.errors import ConfigError

    schema = model.metadata.get_params_schema()
    if schema is not None and "runtime" in {param.name for param in schema.params}:
        from finetune_core.serving.runtime import resolve_runtime

        served = getattr(model.unwrap_python_model(), "served", None)  # tasks/mlflow_io/serving_model.py
        try:
            if served is not None:  # refused before any row is read: the model holds no graph
                resolve_runtime(runtime, served.directory)
        except ValueError as exc:
            raise ConfigError(f"--runtime {runtime}: model {model_uri}: {exc}") from None
        return {"runtime": runtime}
    if runtime == "onnx":
        raise ConfigError(f"--runtime onnx: model {model_uri} was logged before ONNX serving; it runs on PyTorch only")
    return None


def input_columns(model) -> tuple[list[str], set[str]]:
    """The columns the model's signature requires, and those of them it reads as strings."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return [], set()
    strings = {spec.name for spec in schema.inputs if getattr(getattr(spec, "type", None), "name", "") == "string"}
    return list(schema.required_input_names()), strings


def _as_frame(predictions):
    """A DataFrame whatever the pyfunc returned (our models return one already)."""
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return predictions.reset_index(drop=True)
    if isinstance(predictions, pd.Series):
        return predictions.to_frame(predictions.name or "prediction").reset_index(drop=True)
    values = np.asarray(predictions)
    if values.ndim == 1:
        return pd.DataFrame({"prediction": values})
    return pd.DataFrame(values.reshape(len(values), -1)).add_prefix("prediction_")


def score_file(
    model,
    source: Path,
    output: Path,
    batch_size: int,
    scratch: Path,
    on_start: Callable,
    on_batch: Callable,
    params: dict | None = None,
) -> int:
    """Score ``source`` into ``output`` batch by batch; returns the number of rows scored.
    ``params``: MLflow's per-call parameters (the runtime)."""
    import pandas as pd

    from finetune_core.data.batch_io import BatchWriter, InputBatches, with_predictions

    batches = InputBatches(source, scratch)
    required, strings = input_columns(model)
    batches.require(required)
    on_start(batches.rows)
    done = 0
    with BatchWriter(output) as writer:
        for batch in batches.batches(batch_size):
            features = batch[required].copy() if required else batch
            for column in strings:  # a column of digits reads as numbers; the model reads text
                if not pd.api.types.is_string_dtype(features[column]):
                    features[column] = [None if pd.isna(v) else str(v) for v in features[column]]
            writer.write(with_predictions(batch, _as_frame(model.predict(features, params=params))))
            done += len(batch)
            on_batch(len(batch))
    return done


class _Progress:
    """A live bar on a terminal; elsewhere (CI logs, redirected output) one line at the end."""

    def __init__(self, output: Path):
        self.output, self.bar, self.task, self.started = output, None, None, time.perf_counter()

    def start(self, rows: int) -> None:
        self.started = time.perf_counter()
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("rows {task.fields[speed]}"),
                TimeRemainingColumn(),
                console=console,
            )
            self.bar.start()
            self.task = self.bar.add_task("scoring", total=rows, speed="")

    def advance(self, rows: int) -> None:
        if self.bar is not None:
            done = self.bar.tasks[0].completed + rows
            speed = f"{done / max(time.perf_counter() - self.started, 1e-9):.0f}/s"
            self.bar.update(self.task, advance=rows, speed=speed)

    def finish(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.stop()
        seconds = time.perf_counter() - self.started
        console.print(
            f"scored {rows} rows in {seconds:.1f} s ({rows / max(seconds, 1e-9):.0f} rows/s) → {self.output}",
            highlight=False,
            soft_wrap=True,
        )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def predict(
    model_uri: str = typer.Argument(..., metavar="MODEL_URI", help=_MODEL_HELP),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Data file: .csv, .tsv, .jsonl/.json or .parquet."),
    output_path: Path = typer.Argument(
        ..., metavar="OUTPUT", help="Where the scored rows go; the format follows the extension."
    ),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Rows per model call."),
    runtime: Runtime = typer.Option(
        Runtime.auto,
        "--runtime",
        help="auto: ONNX Runtime when the model holds a graph that passed parity at registration, else PyTorch; "
        "onnx or torch: that one.",
    ),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."
    ),
) -> None:
    """Score a data file with a model: the input's columns plus the model's, row for row."""
    import tempfile

    from finetune_core.data.readers import file_format
    from finetune_core.environment import apply_defaults
    from finetune_core.errors import DataError, UserInputError

    apply_defaults()
    from tasks.mlflow_io.tracking_server import TrackingUnavailable, require_tracking_server

    progress = _Progress(output_path)
    try:
        file_format(output_path)  # an unsupported OUTPUT extension fails before any work
        if output_path.resolve() == input_path.resolve():
            raise DataError(f"{output_path}: OUTPUT is INPUT; write the scores to another file")
        import mlflow

        from finetune_core.config.tracking import resolve_tracking_uri

        store = resolve_tracking_uri(tracking_uri)
        require_tracking_server(store)  # a server that is down: named, exit 4
        mlflow.set_tracking_uri(store)
        model = _load_model(model_uri)
        params = runtime_params(model, model_uri, runtime.value) if runtime != Runtime.auto else None
        with tempfile.TemporaryDirectory(prefix="finetune-predict-") as scratch:
            rows = score_file(
                model, input_path, output_path, batch_size, Path(scratch), progress.start, progress.advance, params
            )
    except UserInputError as exc:
        progress.stop()
        print_error(console, exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except TrackingUnavailable as exc:
        progress.stop()
        print_error(console, exc)
        raise typer.Exit(EXIT_TRACKING_DOWN) from None
    except Exception as exc:  # a bug or an environment failure: keep the trace
        progress.stop()
        print_trace(console, exc)
        raise typer.Exit(EXIT_ERROR) from None
    progress.finish(rows)
