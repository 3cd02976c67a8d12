"""Which runtime serves a request: ONNX Runtime when the model directory holds a graph that passed
parity at registration, else PyTorch; ``runtime`` (MLflow ``params`` or ``finetune predict
--runtime``) chooses explicitly. Predictors load on first use, so serving with ONNX Runtime never
imports torch (docs/how-to/serving.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from finetune_core.serving.onnx_predictor import served_graph

RUNTIMES = ("auto", "onnx", "torch")


def resolve_runtime(requested: str, directory: str | Path) -> str:
    """``onnx`` or ``torch`` for a requested ``auto``, ``onnx`` or ``torch``."""
    if requested not in RUNTIMES:
        raise ValueError(f"runtime {requested!r}: choose one of {', '.join(RUNTIMES)}")
    has_graph = served_graph(directory) is not None
    if requested == "auto":
        return "onnx" if has_graph else "torch"
    if requested == "onnx" and not has_graph:
        raise ValueError(
            "runtime onnx: this model holds no ONNX graph that passed parity (logged before ONNX export, "
            "exported with serving.onnx false, or every form failed parity; its version description says which); "
            "use runtime torch or auto"
        )
    return requested


class ServedModel:
    """The model directory with a predictor per runtime, each loaded when first asked for."""

    def __init__(self, directory: str | Path):
        self.directory, self.predictors = Path(directory), {}

    def predictor(self, runtime: str = "auto"):
        runtime = resolve_runtime(runtime, self.directory)
        if runtime not in self.predictors:
            if runtime == "onnx":
                from finetune_core.serving.onnx_predictor import OnnxPredictor

                self.predictors[runtime] = OnnxPredictor.load(self.directory)
            else:
                try:
                    from finetune_core.serving.predictor import Predictor
                except ImportError as exc:  # a serving install (the `serve` extra) has no torch
                    raise ImportError(
                        f"runtime torch needs torch and transformers ({exc}); install finetune-pipeline "
                        "without the serve-only extra, or use runtime onnx"
                    ) from exc
                self.predictors[runtime] = Predictor.load(self.directory)
        return self.predictors[runtime]

    def predict_frame(self, frame: pd.DataFrame, runtime: str = "auto") -> pd.DataFrame:
        return self.predictor(runtime).predict_frame(frame)
