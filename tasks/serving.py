"""The served forms of the trained model, chosen before the model is logged: ONNX export, int8,
parity with PyTorch as a gate, latency and throughput (finetune_core.serving.forms)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.prepare import LABEL, PreparedData
from finetune_core.metric_table import primary_metric
from finetune_core.run_layout import RunLayout
from finetune_core.serving.forms import ParityRows, ServingReport, prepare_serving
from tasks.mlflow_io.tracking import log_json, log_metrics


@task(name="export-serving", cache_policy=NO_CACHE)
def export_serving(config: FinetuneConfig, prepared: PreparedData, layout: RunLayout, run_id: str) -> ServingReport:
    """Export and check the served forms into the model directory (so the logged model carries the
    graph that passed); parity and timings logged as ``parity/…`` and ``serving/…`` metrics."""
    test = prepared.frame("test")
    rows = ParityRows(
        texts=[test[column].astype(str).tolist() for column in prepared.text_columns],
        targets=test[LABEL].tolist(),
        metric=primary_metric(config.task, config.training.metric)[0],
    )
    report = prepare_serving(
        layout.model,
        layout.root / "serving",  # the exported forms before one is chosen; the chosen one is copied
        rows,
        task=config.task,
        serving=config.serving,
        gates=config.gates.parity,
    )
    log_metrics(run_id, report.metrics())
    log_json(run_id, report.model_dump(), "serving/serving.json")
    get_run_logger().info("served form: %s (%s)", report.served, report.reason)
    return report
