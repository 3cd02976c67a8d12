"""What `finetune run` prints and writes when a run ends: the summary table (test metrics, per-label
figures up to ``SUMMARY_MAX_LABELS`` labels, each stage's epochs, seconds and speed, gates, alias,
MLflow run and model), where to browse the run, and the ``--summary-json`` file."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from finetune_core.metric_table import PER_LABEL_PREFIXES

# Up to this many classes or labels, the run summary lists each one's precision/recall/F1.
SUMMARY_MAX_LABELS = 10


def is_per_label(name: str) -> bool:
    if name in ("f1_macro", "f1_micro", "f1_macro_at_0.5"):
        return False
    return name.startswith((*PER_LABEL_PREFIXES, "support_"))  # the metric table owns the prefixes


def summary_table(result) -> Table:
    table = Table(title=f"{result.registered_model} version {result.model_version}")
    table.add_column("what")
    table.add_column("value", justify="right")
    per_label = [name for name in result.metrics if is_per_label(name)]
    labels = sum(name.startswith("precision_") for name in per_label)
    for name, value in result.metrics.items():
        if not name.startswith("support_") and (labels <= SUMMARY_MAX_LABELS or name not in per_label):
            table.add_row(f"test {name}", f"{value:.4f}")
    if labels > SUMMARY_MAX_LABELS:  # 85 Reuters topics would be 255 rows: the figures are in MLflow
        table.add_row("per-label metrics", f"{labels} labels: MLflow run metrics, review files")
    for stage, info in result.stages.items():
        table.add_row(
            f"{stage} stage",
            f"{info['epochs_run']}/{info['epochs']} ep, {info['wall_seconds']:.1f} s, "
            f"{info['samples_per_second']:.0f} samples/s",
        )
    table.add_row("gates", "passed" if result.gate_passed else "FAILED")
    table.add_row("alias", "champion" if result.champion else "challenger")
    table.add_row("MLflow run", result.mlflow_run_id)
    table.add_row("model", f"models:/{result.registered_model}/{result.model_version}")
    return table


def browse_hint(tracking_uri: str) -> str:
    from tasks.mlflow_io.tracking import sqlite_path

    database = sqlite_path(tracking_uri)
    if database is None:
        return f"MLflow tracking server: {tracking_uri}"
    return f"MLflow database: {database}\nBrowse it: mlflow ui --backend-store-uri sqlite:///{database}"


STAGE_KEYS = (
    "wall_seconds",
    "train_seconds",
    "train_examples",
    "samples_per_second",
    "epochs",
    "epochs_run",
    "best_epoch",
    "stopped_early",
    "resumed_after_epoch",
    "extra",
)


def write_summary_json(path: Path, result) -> None:
    summary = {
        "metrics": result.metrics,
        "stages": {stage: {key: info[key] for key in STAGE_KEYS} for stage, info in result.stages.items()},
        "calibration": result.calibration,
        "mlflow_run_id": result.mlflow_run_id,
        "model_uri": result.model_uri,
        "model_version": result.model_version,
        "registered_model": result.registered_model,
        "tracking_uri": result.tracking_uri,
        "backbone": result.backbone,
        "run_dir": result.run_dir,
        "gate_passed": result.gate_passed,
        "gate_reasons": result.gate_reasons,
        "champion": result.champion,
        "previous_champion": result.previous_champion,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
