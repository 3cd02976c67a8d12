"""Export and parity on tiny random models: the ONNX graph (fp32, and int8 where it passes) serves
what the PyTorch model serves, post-processing included, for single texts, sentence pairs,
regression and multilabel; a form that fails parity is never served."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from finetune_core.config.gates import ParityGates
from finetune_core.config.sections import ServingConfig
from finetune_core.serving.forms import ParityRows, prepare_serving
from finetune_core.serving.onnx_predictor import RECORD_FILE, SERVING_DIR, OnnxPredictor, served_graph
from finetune_core.serving.predictor import Predictor
from finetune_core.serving.runtime import ServedModel, resolve_runtime
from tests.serving.onnx_models import KINDS, TEXTS, model_dir, request, targets, task_of


def _rows(kind: str) -> ParityRows:
    frame = request(kind)
    texts = [frame[c].tolist() for c in ("sentence", "other") if c in frame]  # a pair model's request has both
    metric = {"regression": "spearman", "multilabel": "f1_macro"}.get(task_of(kind), "accuracy")
    return ParityRows(texts=texts, targets=targets(kind), metric=metric)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_fp32_graph_serves_what_pytorch_serves(kind, tiny_backbone, tmp_path):
    directory = model_dir(tiny_backbone, kind, tmp_path / "model")
    report = prepare_serving(
        directory,
        tmp_path / "work",
        _rows(kind),
        task=task_of(kind),
        serving=ServingConfig(onnx=True, quantize="none"),
        gates=ParityGates(),
    )
    assert report.served == "onnx-fp32", report.reason
    (checked,) = report.parities
    assert checked.passed and checked.max_probability_difference < 1e-4
    assert checked.agreement == (None if kind == "regression" else 1.0)

    torch_frame = Predictor.load(directory).predict_frame(request(kind))
    onnx_frame = ServedModel(directory).predict_frame(request(kind))  # auto: the graph that passed
    assert list(onnx_frame.columns) == list(torch_frame.columns)
    numbers = [c for c in torch_frame if c.startswith(("probability_", "prediction"))]
    np.testing.assert_allclose(onnx_frame[numbers], torch_frame[numbers], atol=1e-5)
    decision = {"regression": None, "multilabel": "labels"}.get(task_of(kind), "label")
    if decision:
        assert onnx_frame[decision].tolist() == torch_frame[decision].tolist()


def test_raw_outputs_match_pytorch_in_any_batch_order(tiny_backbone, tmp_path):
    """Rows of every length in one batch or one at a time: padding never leaks into the outputs."""
    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")
    prepare_serving(
        directory,
        tmp_path / "work",
        _rows("classification"),
        task="classification",
        serving=ServingConfig(onnx=True, quantize="none", latency_rows=0),
        gates=ParityGates(),
    )
    onnx = OnnxPredictor.load(directory, batch_size=64)
    expected = Predictor.load(directory).raw_outputs(TEXTS)
    np.testing.assert_allclose(onnx.raw_outputs(TEXTS), expected, atol=1e-5)
    single = np.concatenate([onnx.raw_outputs([t]) for t in TEXTS])
    np.testing.assert_allclose(single, expected, atol=1e-5)


def test_int8_is_served_when_it_passes_and_timings_are_recorded(tiny_backbone, tmp_path):
    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")
    lenient = ParityGates(min_agreement=0.0, max_metric_difference=1.0)  # int8's own accuracy on 6 rows varies
    report = prepare_serving(
        directory,
        tmp_path / "work",
        _rows("classification"),
        task="classification",
        serving=ServingConfig(onnx=True, latency_rows=3),
        gates=lenient,
    )
    assert report.served == "onnx-int8" and [p.form for p in report.parities] == ["onnx-int8"]
    assert report.sizes_mb["onnx-int8"] < report.sizes_mb["onnx-fp32"]
    assert {t.runtime for t in report.timings} == {"torch", "onnx-int8"}
    metrics = report.metrics()
    for name in ("parity/int8_agreement", "serving/torch_p50_ms", "serving/onnx_int8_rows_per_s", "serving/torch_mb"):
        assert metrics[name] >= 0, name
    recorded = json.loads((directory / SERVING_DIR / RECORD_FILE).read_text())
    assert recorded["served"] == "onnx-int8" and recorded["timings"]
    assert "onnx-int8" in report.markdown() and "p50" in report.markdown()


def test_a_form_that_fails_parity_is_not_served(tiny_backbone, tmp_path, monkeypatch):
    """int8 made to disagree (its graph exported from the model with the head negated) is kept
    out: the fp32 graph is served, and the record says why."""
    import torch

    from finetune_core.serving import onnx_export
    from finetune_core.serving.predictor import load_model_dir

    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")

    def disagreeing_int8(source, target, **_):
        model, tokenizer, meta = load_model_dir(directory)
        with torch.no_grad():
            model.classifier.weight.neg_()
            model.classifier.bias.neg_()
        return onnx_export.export_onnx(model, tokenizer, meta, target)

    monkeypatch.setattr(onnx_export, "quantize_int8", disagreeing_int8)
    report = prepare_serving(
        directory,
        tmp_path / "work",
        _rows("classification"),
        task="classification",
        serving=ServingConfig(onnx=True, latency_rows=0),
        gates=ParityGates(),
    )
    assert [(p.form, p.passed) for p in report.parities] == [("onnx-int8", False), ("onnx-fp32", True)]
    assert report.served == "onnx-fp32"
    assert "onnx-int8 failed parity (label agreement" in report.reason and "onnx-int8 failed" in report.markdown()
    assert report.metrics()["parity/int8_passed"] == 0.0


def test_no_form_passing_leaves_torch_served_and_runtime_onnx_refused(tiny_backbone, tmp_path):
    directory = model_dir(tiny_backbone, "regression", tmp_path / "model")
    prepare_serving(
        directory,
        tmp_path / "work",
        _rows("regression"),
        task="regression",
        serving=ServingConfig(onnx=True, quantize="none"),
        gates=ParityGates(),
    )
    assert served_graph(directory) is not None  # a graph from the first attempt…
    report = prepare_serving(
        directory,
        tmp_path / "work",
        _rows("regression"),
        task="regression",
        serving=ServingConfig(onnx=False),
        gates=ParityGates(),
    )
    assert report.served == "torch" and served_graph(directory) is None  # …is gone once it is not chosen
    assert resolve_runtime("auto", directory) == "torch"
    with pytest.raises(ValueError, match="runtime onnx: this model holds no ONNX graph"):
        resolve_runtime("onnx", directory)
    with pytest.raises(ValueError, match="choose one of auto, onnx, torch"):
        resolve_runtime("tensorrt", directory)
    served = ServedModel(directory).predict_frame(pd.DataFrame({"sentence": TEXTS}))
    assert list(served.columns) == ["prediction"]


def test_a_model_the_exporter_cannot_take_is_served_by_pytorch(tiny_backbone, tmp_path, monkeypatch):
    from finetune_core.serving import export_process

    def unsupported(*_args, **_kwargs):  # what the child process reports: the error it ended with
        raise export_process.OnnxExportError("RuntimeError: unsupported operator aten::made_up\nmore detail")

    monkeypatch.setattr(export_process, "export_model_dir", unsupported)
    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")
    report = prepare_serving(
        directory,
        tmp_path / "work",
        _rows("classification"),
        task="classification",
        serving=ServingConfig(onnx=True),
        gates=ParityGates(),
    )
    assert report.served == "torch" and served_graph(directory) is None
    assert report.reason == "ONNX export failed (RuntimeError: unsupported operator aten::made_up)"
    assert "Served by default: **torch** (ONNX export failed" in report.markdown()
