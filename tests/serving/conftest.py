"""A tiny classification model logged to MLflow with the ONNX graph that passed parity."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from finetune_core.config.gates import ParityGates
from finetune_core.config.sections import ServingConfig
from finetune_core.serving.forms import ParityRows, prepare_serving
from tasks.register import log_pyfunc
from tests.serving.onnx_models import TEXTS, model_dir, request, targets


@pytest.fixture
def onnx_model(tiny_backbone, tracking_uri, tmp_path) -> tuple[str, Path]:
    """A classification model logged with its fp32 graph (parity passed), and its directory."""
    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")
    rows = ParityRows(texts=[TEXTS], targets=targets("classification"), metric="accuracy")
    report = prepare_serving(
        directory,
        tmp_path / "work",
        rows,
        task="classification",
        serving=ServingConfig(onnx=True, quantize="none", latency_rows=0),
        gates=ParityGates(),
    )
    assert report.served == "onnx-fp32", report.reason
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("serving")
    with mlflow.start_run() as run:
        uri = log_pyfunc(directory, request("classification", 1), run.info.run_id)
    return uri, directory
