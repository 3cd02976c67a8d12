"""MLflow at the edges: parameters, per-epoch metrics, text artifacts. No Prefect here.

Every function takes the run id explicitly, so it logs to the flow's run from any thread.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.loading import flatten

TRUNCATED_MARK = "...[truncated, see config.yaml]"
# Our pyfunc model is logged with an explicit signature and input example; MLflow's advice to
# add type hints to `predict` (for inferring one) is noise in every run's log.
warnings.filterwarnings("ignore", message=r"Add type hints to the `predict` method")


def shorten(value: str, limit: int = MAX_PARAM_VAL_LENGTH) -> str:
    """Params longer than MLflow's limit would fail the run: truncate; the full value is in config.yaml."""
    return value if len(value) <= limit else value[: limit - len(TRUNCATED_MARK)] + TRUNCATED_MARK


def log_config(run_id: str, config: FinetuneConfig) -> None:
    client = MlflowClient()
    params = [Param(key[:MAX_ENTITY_KEY_LENGTH], shorten(value)) for key, value in flatten(config).items()]
    for start in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])
    client.log_dict(run_id, config.model_dump(mode="json"), "config.yaml")


def log_metrics(run_id: str, metrics: dict[str, float], prefix: str = "", step: int = 0) -> None:
    timestamp = int(time.time() * 1000)
    batch = [
        Metric(f"{prefix}{name}", float(value), timestamp, step)
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and math.isfinite(value)
    ]
    for start in range(0, len(batch), 1000):
        MlflowClient().log_batch(run_id, metrics=batch[start : start + 1000])


class EpochLogger:
    """The training callback: one metric series per stage, stepped by epoch. A picklable
    object that carries its tracking URI, so a data-parallel worker process logs too."""

    def __init__(self, run_id: str):
        self.run_id, self.tracking_uri = run_id, mlflow.get_tracking_uri()

    def __call__(self, stage: str, epoch: int, metrics: dict) -> None:
        if mlflow.get_tracking_uri() != self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        log_metrics(self.run_id, metrics, prefix=f"{stage}/", step=epoch)


def epoch_logger(run_id: str) -> EpochLogger:
    return EpochLogger(run_id)


def log_json(run_id: str, payload: dict, artifact_file: str) -> None:
    MlflowClient().log_text(run_id, json.dumps(payload, indent=2, default=str), artifact_file)


@contextmanager
def active_run(run_id: str):
    """Fluent MLflow calls (log_model) need the run active in this thread."""
    current = mlflow.active_run()
    if current is not None and current.info.run_id == run_id:
        yield current
        return
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def sqlite_path(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]).resolve() if tracking_uri.startswith(prefix) else None
