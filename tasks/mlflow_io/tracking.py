"""MLflow at the edges: parameters, per-epoch metrics, text artifacts, the run's datasets. No
Prefect here.

Every function takes the run id explicitly, so it logs to the flow's run from any thread.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, Param
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH
from pydantic import BaseModel

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.loading import flatten
from finetune_core.redaction import redact_uri

TRUNCATED_MARK = "...[truncated, see config.yaml]"
# Our pyfunc model is logged with an explicit signature and input example; MLflow's advice to
# add type hints to `predict` (for inferring one) is noise in every run's log.
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")  # (colour codes first)


def shorten(value: str, limit: int = MAX_PARAM_VAL_LENGTH) -> str:
    """Params longer than MLflow's limit would fail the run: truncate; the full value is in config.yaml."""
    return value if len(value) <= limit else value[: limit - len(TRUNCATED_MARK)] + TRUNCATED_MARK


def log_config(run_id: str, config: FinetuneConfig) -> None:
    client = MlflowClient()
    params = [Param(key[:MAX_ENTITY_KEY_LENGTH], shorten(value)) for key, value in flatten(config).items()]
    for start in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])
    client.log_dict(run_id, config.for_record(), "config.yaml")


def log_metrics(
    run_id: str,
    metrics: dict[str, float],
    prefix: str = "",
    step: int = 0,
    model_id: str | None = None,
    dataset: SplitDataset | None = None,
) -> None:
    """Finite numbers only. ``model_id``: the metrics also go on that logged model's page (MLflow 3),
    measured on ``dataset`` (one the run recorded with ``log_datasets``)."""
    timestamp = int(time.time() * 1000)
    on = {"model_id": model_id}
    if dataset is not None:
        on.update(dataset_name=dataset.name, dataset_digest=dataset.digest)
    batch = [
        Metric(f"{prefix}{name}", float(value), timestamp, step, **on)
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
        self.steps: dict[str, set[int]] = {}  # per series: steps already in MLflow (read once)

    def __call__(self, stage: str, epoch: int, metrics: dict) -> None:
        if mlflow.get_tracking_uri() != self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        first = next((k for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)), None)
        if first is None:
            return
        series = f"{stage}/{first}"
        if series not in self.steps:  # one look per series and process, not one per epoch
            self.steps[series] = {m.step for m in MlflowClient().get_metric_history(self.run_id, series)}
        if epoch in self.steps[series]:  # reported again after a crash: once is enough
            return
        log_metrics(self.run_id, metrics, prefix=f"{stage}/", step=epoch)
        self.steps[series].add(epoch)


def epoch_logger(run_id: str) -> EpochLogger:
    return EpochLogger(run_id)


class SplitDataset(BaseModel):
    """A split as a run's dataset input: where it came from, its fingerprint and its rows."""

    name: str  # the split: train, validation, test
    source: str  # the file it was read from (a held-out validation split: the train file)
    digest: str
    rows: int
    context: str  # MLflow's input context: training, validation, test


class _SplitReference(MetaDataset):
    """A MetaDataset (a reference, not the data) with the row count as its profile."""

    def __init__(self, split: SplitDataset):
        with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple")
            source = resolve_dataset_source(split.source)
        super().__init__(source, name=split.name, digest=split.digest)
        self.rows = split.rows

    @property
    def profile(self) -> dict:
        return {"num_rows": self.rows}

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def log_datasets(run_id: str, datasets: list[SplitDataset]) -> None:
    """Record the splits as the run's dataset inputs (the run's Datasets in the MLflow UI): a
    reference with digest and row count, not the data, so a split of any size costs nothing."""
    with active_run(run_id):
        mlflow.log_inputs(
            [_SplitReference(s) for s in datasets],
            contexts=[s.context for s in datasets],
            tags_list=[None] * len(datasets),
        )


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


def use_store(tracking_uri: str) -> None:
    """Track in ``tracking_uri`` from now on. MLflow prints each run's link with the URI as given,
    credentials included: with credentials in it, that print is switched off (ours names the
    store redacted, finetune_core/redaction.py)."""
    mlflow.set_tracking_uri(tracking_uri)
    if redact_uri(tracking_uri) != tracking_uri:
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def sqlite_path(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]).resolve() if tracking_uri.startswith(prefix) else None
