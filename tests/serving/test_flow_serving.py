"""The `finetune` flow with ONNX export on (`serving.onnx: true`): the registered version carries the parity
and latency figures (as run metrics and in its description), and its logged model holds the form
that passed, served by default without loading torch."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from tests.conftest import tiny_config


def test_a_registered_version_carries_parity_and_latency(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path
):
    from flows.finetune import finetune

    config = validate_config(tiny_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, serving={"onnx": True}))
    result = finetune(config)

    client = MlflowClient(tracking_uri)
    metrics = client.get_run(result.mlflow_run_id).data.metrics
    version = client.get_model_version("tiny-model", result.model_version)
    assert "parity/int8_agreement" in metrics and "parity/int8_max_probability_difference" in metrics
    int8_passed = metrics["parity/int8_passed"] == 1.0
    served = "onnx-int8" if int8_passed else "onnx-fp32"  # fp32 matches PyTorch to rounding
    if not int8_passed:
        assert metrics["parity/fp32_passed"] == 1.0
    runtime = served.replace("-", "_")
    for name in ("torch_p50_ms", "torch_p95_ms", "torch_rows_per_s", f"{runtime}_p50_ms", f"{runtime}_rows_per_s"):
        assert metrics[f"serving/{name}"] > 0, name
    # int8 quantises every projection (docs/decisions/onnx-export.md); fp32 ONNX is about the torch size
    assert metrics["serving/torch_mb"] > metrics[f"serving/{runtime}_mb"] * (1.5 if int8_passed else 0.5)

    description = version.description
    assert "## Serving" in description and f"Served by default: **{served}**" in description
    assert "p50 ms (batch 1)" in description and "agreement" in description

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/tiny-model/{result.model_version}")
    served_model = model.unwrap_python_model().served
    assert set(served_model.predictors) == {"onnx"}  # loaded for `auto`: the graph, not torch
    predictions = model.predict(pd.DataFrame({"sentence": ["a gorgeous , witty film", "a dull mess"]}))
    assert list(predictions.columns) == ["label", "probability_0", "probability_1"]
