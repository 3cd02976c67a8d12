"""`finetune predict --runtime`: ONNX Runtime and PyTorch score a file alike; a model without an
ONNX graph refuses `--runtime onnx` by name, before reading a row (exit 2)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from finetune_core.serving.predictor import ModelMeta, save_model_dir
from flows.cli import app
from tasks.register import log_pyfunc
from tests.serving.onnx_models import TEXTS

runner = CliRunner()


def _score(model_uri: str, runtime: str, source, target) -> pd.DataFrame:
    done = runner.invoke(app, ["predict", model_uri, str(source), str(target), "--runtime", runtime])
    assert done.exit_code == 0, done.output
    return pd.read_csv(target)


def test_onnx_and_torch_runtimes_score_a_file_alike(onnx_model, tracking_uri, tmp_path, monkeypatch):
    uri, _ = onnx_model
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": range(len(TEXTS)), "sentence": TEXTS}).to_csv(source, index=False)
    by_onnx = _score(uri, "onnx", source, tmp_path / "onnx.csv")
    by_torch = _score(uri, "torch", source, tmp_path / "torch.csv")
    by_default = _score(uri, "auto", source, tmp_path / "auto.csv")
    assert by_onnx["label"].tolist() == by_torch["label"].tolist() == by_default["label"].tolist()
    np.testing.assert_allclose(by_onnx["probability_positive"], by_torch["probability_positive"], atol=1e-5)
    np.testing.assert_allclose(by_default["probability_positive"], by_onnx["probability_positive"], atol=0)


def test_runtime_onnx_on_a_model_without_a_graph_exits_2(tiny_backbone, tracking_uri, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=2)
    meta = ModelMeta(task="classification", text_column="sentence", max_length=32, labels=["0", "1"])
    directory = save_model_dir(model, AutoTokenizer.from_pretrained(tiny_backbone), meta, tmp_path / "model")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("predict-runtime")
    with mlflow.start_run() as run:
        uri = log_pyfunc(directory, pd.DataFrame({"sentence": ["a fine film"]}), run.info.run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    source = tmp_path / "in.csv"
    pd.DataFrame({"sentence": TEXTS}).to_csv(source, index=False)
    done = runner.invoke(app, ["predict", uri, str(source), str(tmp_path / "out.csv"), "--runtime", "onnx"])
    assert done.exit_code == 2, done.output
    assert "--runtime onnx" in done.output and "no ONNX graph" in done.output
    assert not (tmp_path / "out.csv").exists()
