"""Export a trained model directory to ONNX and quantise it to int8.

The graph is the model through the pooling and head it was trained with
(``finetune_core.model.heads.forward_logits``): inputs are token ids, outputs the raw outputs
the PyTorch predictor computes. Post-processing (temperature, thresholds, regression scaling)
stays in ``finetune_core.serving.outputs``, shared by both runtimes. Why ``torch.onnx.export``
with ``dynamo=True``, and why its graph is fused with ``onnxscript``'s ONNX Runtime fusions
(``finetune_core.serving.fusion``) rather than ``onnxruntime.transformers.optimizer``: docs/decisions/onnx-export.md.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import threading
import warnings
from pathlib import Path

import torch

from finetune_core.model.heads import forward_logits, head_spec
from finetune_core.serving.fusion import fuse_transformer_ops
from finetune_core.serving.outputs import ModelMeta

OUTPUT_NAME = "outputs"
OPSET = 18
# What torch's exporter says on every export of a text model, none of it actionable by a user: the
# torchvision operators it skips, dynamic axes it renames, a pytree deprecation inside torch.
for _message in (r"# The axis name: .* will not be used", r"`isinstance\(treespec, LeafSpec\)` is deprecated"):
    warnings.filterwarnings("ignore", message=_message)
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
# torch.export keeps its pre-dispatch mode stack in one process-wide object: two exports on two threads
# corrupt it, and every later export in the process fails (finetune_core/serving/export_process.py)
_EXPORTING = threading.Lock()


class _Scorer(torch.nn.Module):
    """The model as served: token ids in, raw outputs through the trained pooling and head out."""

    def __init__(self, model, meta: ModelMeta, input_names: list[str]):
        super().__init__()
        self.model, self.spec, self.input_names = model, head_spec(model, meta.pooling), input_names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        return forward_logits(self.model, self.spec, batch)


def graph_inputs(model, tokenizer) -> list[str]:
    """The graph's inputs: segment ids only where the tokenizer makes them and the model reads them."""
    names = ["input_ids", "attention_mask"]
    accepts = "token_type_ids" in inspect.signature(model.base_model.forward).parameters
    if accepts and "token_type_ids" in getattr(tokenizer, "model_input_names", []):
        names.append("token_type_ids")
    return names


def export_onnx(model, tokenizer, meta: ModelMeta, path: str | Path, *, fuse: bool = True) -> Path:
    """``path``: one self-contained ONNX file (weights inside) with dynamic batch and sequence axes;
    ``fuse``: with ONNX Runtime's transformer operators (``fuse_transformer_ops``). In this process: one
    export at a time, and torch work on other threads meanwhile may fail; registration exports in a
    child process instead (``export_process.export_model_dir``)."""
    import onnx
    import onnxscript  # noqa: F401  torch's dynamo exporter writes the graph with it: fail here, by name

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = graph_inputs(model, tokenizer)
    example = tokenizer(["an example text to trace", "short"], padding=True, return_tensors="pt")
    args = tuple(example[n] if n in example else torch.zeros_like(example["input_ids"]) for n in names)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    scorer = _Scorer(model.eval(), meta, names).eval()
    with _EXPORTING, torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            scorer,
            args,
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    if fuse:
        _fuse_in_place(path)
    return path


def _fuse_in_place(path: Path) -> None:
    scratch = path.with_suffix(".fused.onnx")
    try:
        fuse_transformer_ops(path, scratch)
    except Exception:  # fusion only speeds the graph up: an architecture the rewriter fails on is served unfused
        scratch.unlink(missing_ok=True)
        return
    scratch.replace(path)


def quantize_int8(source: str | Path, target: str | Path, *, per_channel: bool = True) -> Path:
    """ONNX Runtime's dynamic quantisation: int8 weights (a scale per output channel: closer to fp32 at the
    same speed, docs/decisions/onnx-export.md), activations quantised per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)
    scratch = target.with_suffix(".prep.onnx")
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(source), str(scratch), skip_symbolic_shape=True)
    except Exception:  # pre-processing only helps; quantising the graph as exported still works
        shutil.copyfile(source, scratch)
    quantize_dynamic(str(scratch), str(target), weight_type=QuantType.QInt8, per_channel=per_channel)
    scratch.unlink(missing_ok=True)
    return target
