"""Serve a model directory's ONNX graph with ONNX Runtime: no torch, no transformers.

Tokenisation is the tokenizer's own fast implementation (the ``tokenizers`` package reading the
directory's ``tokenizer.json``), truncated as the PyTorch predictor truncates; outputs go through
the same post-processing (``finetune_core.serving.outputs``). Rows are scored longest first in
batches padded to their longest row, at most ``ONNX_BATCH_TOKENS`` padded tokens each, and
returned in input order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from finetune_core.batch_plan import BatchLimit, scored_in_row_order
from finetune_core.serving.outputs import ModelMeta, input_texts, load_meta, outputs_to_frame

SERVING_DIR = "serving"  # inside the model directory: the served graph and its parity record
GRAPH_FILE = "model.onnx"
RECORD_FILE = "serving.json"
# Most padded tokens in one ONNX Runtime batch: a call's rows, longest first, go in batches this size;
# caps of 256-512 ran within 5 % of each other on the CPU measured (docs/benchmarks/serving.md, Reading).
ONNX_BATCH_TOKENS = 384
UNFUSED = ["SkipLayerNormFusion", "BiasGeluFusion"]  # ONNX Runtime's fusions the session leaves out


def served_graph(directory: str | Path) -> Path | None:
    """The graph that passed parity at registration, or None (no export, or every form failed)."""
    record = Path(directory) / SERVING_DIR / RECORD_FILE
    if not record.is_file():
        return None
    served = json.loads(record.read_text(encoding="utf-8")).get("served")
    graph = Path(directory) / SERVING_DIR / GRAPH_FILE
    return graph if served in ("onnx-fp32", "onnx-int8") and graph.is_file() else None


def _tokenizer(directory: Path, max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()  # batches are padded here, each to its own longest row
    # the PyTorch predictor's truncation: the longer text of a pair first (finetune_core.model.batching)
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    return tokenizer


def _pad_id(directory: Path, tokenizer) -> int:
    """The pad token's id, as the PyTorch predictor pads (``pad_token_id or 0``)."""
    config = directory / "tokenizer_config.json"
    token = json.loads(config.read_text(encoding="utf-8")).get("pad_token") if config.is_file() else None
    if isinstance(token, dict):
        token = token.get("content")
    return (tokenizer.token_to_id(token) if isinstance(token, str) else None) or 0


def session(graph: Path, optimized_copy: Path | None = None):
    """An ONNX Runtime session on ``graph`` as the predictor runs it; ``optimized_copy``: also write
    the graph as ONNX Runtime optimised it there (to see what runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # as torch's default: every core unless OMP_NUM_THREADS says otherwise (0 = ONNX Runtime's own choice)
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", 0) or 0)
    if optimized_copy is not None:
        options.optimized_model_filepath = str(optimized_copy)
    # ONNX Runtime would fuse them back into its slower SkipLayerNormalization and BiasGelu
    # (docs/decisions/onnx-export.md)
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED)


class OnnxPredictor:
    runtime = "onnx"

    def __init__(self, graph: Path, tokenizer, meta: ModelMeta, *, pad_id: int = 0, batch_size: int = 64):
        self.session, self.tokenizer, self.meta = session(graph), tokenizer, meta
        self.pad_id, self.batch_size = pad_id, batch_size
        self.inputs = [i.name for i in self.session.get_inputs()]

    @classmethod
    def load(cls, directory: str | Path, batch_size: int = 64, graph: Path | None = None) -> OnnxPredictor:
        """``graph``: another ONNX file of the same model (the parity check scores each form)."""
        directory = Path(directory)
        graph = graph or served_graph(directory)
        if graph is None:
            raise FileNotFoundError(f"{directory}: no ONNX graph that passed parity ({SERVING_DIR}/{RECORD_FILE})")
        meta = load_meta(directory)
        tokenizer = _tokenizer(directory, meta.max_length)
        return cls(graph, tokenizer, meta, pad_id=_pad_id(directory, tokenizer), batch_size=batch_size)

    def _encode(self, columns: list[list[str]]):
        """(ids, segment ids or None), as ``batching.tokenize`` makes them: a row is one text or a pair."""
        encodings = self.tokenizer.encode_batch(list(zip(*columns)) if len(columns) > 1 else columns[0])
        return [e.ids for e in encodings], [e.type_ids for e in encodings] if len(columns) > 1 else None

    def _feed(self, ids: list[list[int]], types: list[list[int]] | None, rows: np.ndarray) -> dict:
        width = max(len(ids[i]) for i in rows)
        feed = {
            "input_ids": np.full((len(rows), width), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(rows), width), dtype=np.int64),
            "token_type_ids": np.zeros((len(rows), width), dtype=np.int64),
        }
        for r, i in enumerate(rows):
            feed["input_ids"][r, : len(ids[i])] = ids[i]
            feed["attention_mask"][r, : len(ids[i])] = 1
            if types is not None:
                feed["token_type_ids"][r, : len(types[i])] = types[i]
        return {name: feed[name] for name in self.inputs}

    def raw_outputs(self, *columns: list[str]) -> np.ndarray:
        """The graph's outputs (logits, or standardised values) in input order; ``columns``: the
        texts, and the second texts for a model trained on sentence pairs."""
        ids, types = self._encode([[str(t) for t in texts] for texts in columns])
        lengths = np.array([len(row) for row in ids], dtype=np.int64)

        def score(rows) -> np.ndarray:
            return self.session.run(None, self._feed(ids, types, rows))[0].astype(np.float32, copy=False)

        results = scored_in_row_order(lengths, BatchLimit(self.batch_size, ONNX_BATCH_TOKENS), score)
        width = 1 if self.meta.task == "regression" else len(self.meta.labels or [])
        return results if results is not None else np.zeros((0, width), dtype=np.float32)

    def predict_texts(self, *columns: list[str]) -> pd.DataFrame:
        return outputs_to_frame(self.raw_outputs(*columns), self.meta)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.predict_texts(*input_texts(frame, self.meta))
