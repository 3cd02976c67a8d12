"""Parity of a served form with the PyTorch model, and what each form costs to run.

Pure functions over the frames both predictors return (``finetune_core.serving.outputs``): the
share of rows (per label for multilabel) whose decision agrees, the difference in the primary test
metric, the largest probability (regression: prediction) difference; and latency at batch 1 and
throughput at batch 32 on the same rows.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from pydantic import BaseModel

from finetune_core.config.gates import ParityGates
from finetune_core.metrics.served import predicted_ids, served_labels, served_metrics


class Parity(BaseModel):
    form: str  # onnx-fp32 | onnx-int8
    rows: int
    metric: str
    metric_torch: float
    metric_form: float
    agreement: float | None = None  # classification; multilabel: the lowest label's; regression: None
    max_probability_difference: float  # regression: the largest prediction difference
    passed: bool = False
    reasons: list[str] = []

    def metrics(self) -> dict[str, float]:
        prefix = f"parity/{self.form.removeprefix('onnx-')}_"
        values = {
            "metric_difference": abs(self.metric_form - self.metric_torch),
            "max_probability_difference": self.max_probability_difference,
            "passed": float(self.passed),
        }
        if self.agreement is not None:
            values["agreement"] = self.agreement
        return {prefix + name: value for name, value in values.items()}


def _agreement(task: str, torch_frame: pd.DataFrame, form_frame: pd.DataFrame, labels) -> float | None:
    if task == "regression":
        return None
    same = predicted_ids(task, torch_frame, labels) == predicted_ids(task, form_frame, labels)
    return float(same.mean(axis=0).min()) if task == "multilabel" else float(same.mean())


def _largest_difference(task: str, torch_frame: pd.DataFrame, form_frame: pd.DataFrame) -> float:
    columns = ["prediction"] if task == "regression" else [c for c in torch_frame if c.startswith("probability_")]
    difference = np.abs(torch_frame[columns].to_numpy(np.float64) - form_frame[columns].to_numpy(np.float64))
    return float(difference.max()) if difference.size else 0.0


def parity(
    form: str,
    torch_frame: pd.DataFrame,
    form_frame: pd.DataFrame,
    *,
    task: str,
    targets: np.ndarray,
    metric: str,
    gates: ParityGates,
) -> Parity:
    """Compare a served form's predictions on the test rows with PyTorch's, against ``gates``."""
    labels = served_labels(torch_frame) if task != "regression" else None
    result = Parity(
        form=form,
        rows=len(torch_frame),
        metric=metric,
        metric_torch=served_metrics(task, torch_frame, targets, labels)[metric],
        metric_form=served_metrics(task, form_frame, targets, labels)[metric],
        agreement=_agreement(task, torch_frame, form_frame, labels),
        max_probability_difference=_largest_difference(task, torch_frame, form_frame),
    )
    reasons = []
    if result.agreement is not None and result.agreement < gates.min_agreement:
        reasons.append(f"label agreement {result.agreement:.2%} < {gates.min_agreement:.2%}")
    difference = abs(result.metric_form - result.metric_torch)
    if not difference <= gates.max_metric_difference:  # NaN fails too
        reasons.append(f"{metric} differs by {difference:.4f} > {gates.max_metric_difference:.4f}")
    return result.model_copy(update={"passed": not reasons, "reasons": reasons})


class Timing(BaseModel):
    runtime: str  # torch | onnx-fp32 | onnx-int8
    p50_ms: float  # one row per call, tokenisation and post-processing included
    p95_ms: float
    rows_per_s: float  # batches of ``batch_size`` rows
    batch_size: int = 32

    def metrics(self) -> dict[str, float]:
        prefix = f"serving/{self.runtime.replace('-', '_')}_"
        return {prefix + "p50_ms": self.p50_ms, prefix + "p95_ms": self.p95_ms, prefix + "rows_per_s": self.rows_per_s}


def measure_timing(
    runtime: str, predict, columns: list[list[str]], *, single_rows: int, batch_size: int = 32
) -> Timing:
    """``predict(*columns)`` (the texts, and a pair's second texts) timed on ``single_rows`` rows one
    at a time (after two warm-up calls) and on up to eight times as many in batches of ``batch_size``."""
    total = len(columns[0])
    single = max(min(single_rows, total), 1)
    for i in range(min(2, total)):
        predict(*(texts[i : i + 1] for texts in columns))
    latencies = []
    for i in range(single):
        started = time.perf_counter()
        predict(*(texts[i : i + 1] for texts in columns))
        latencies.append((time.perf_counter() - started) * 1000)
    rows = min(total, max(8 * single, batch_size))
    started = time.perf_counter()
    for start in range(0, rows, batch_size):
        end = min(start + batch_size, rows)
        predict(*(texts[start:end] for texts in columns))
    seconds = max(time.perf_counter() - started, 1e-9)
    p50, p95 = np.percentile(latencies, [50, 95])
    return Timing(
        runtime=runtime, p50_ms=float(p50), p95_ms=float(p95), rows_per_s=rows / seconds, batch_size=batch_size
    )
