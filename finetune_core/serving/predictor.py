"""A trained model directory (weights, tokenizer, metadata) and the PyTorch predictor that serves it.

The directory is what gets logged to MLflow; the MLflow pyfunc wrapper only delegates here (or
to ``finetune_core.serving.onnx_predictor``, which needs no torch). Metadata and post-processing
live in ``finetune_core.serving.outputs``, shared by both runtimes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune_core.model.batching import BatchLimit, encode_columns, inference_batch_tokens
from finetune_core.model.heads import head_spec
from finetune_core.model.inference import predict_outputs
from finetune_core.model.loading import MODEL_LOADING
from finetune_core.serving.outputs import (
    META_FILE,
    ModelMeta,
    input_texts,
    load_meta,
    multilabel_frame,
    outputs_to_frame,
    write_meta,
)

__all__ = [
    "META_FILE",
    "ModelMeta",
    "Predictor",
    "load_meta",
    "load_model_dir",
    "multilabel_frame",
    "outputs_to_frame",
    "save_model_dir",
    "write_meta",
]


def save_model_dir(model, tokenizer, meta: ModelMeta, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_meta(meta, directory)
    return directory


def load_model_dir(directory: str | Path):
    """(model, tokenizer, meta) from a directory written by ``save_model_dir``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = Path(directory)
    with MODEL_LOADING:
        model = AutoModelForSequenceClassification.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return model, tokenizer, load_meta(directory)


class Predictor:
    runtime = "torch"

    def __init__(self, model, tokenizer, meta: ModelMeta, batch_size: int = 64):
        self.model, self.tokenizer, self.meta, self.batch_size = model.eval(), tokenizer, meta, batch_size

    @classmethod
    def load(cls, directory: str | Path, batch_size: int = 64) -> Predictor:
        return cls(*load_model_dir(directory), batch_size=batch_size)

    def raw_outputs(self, *columns: list[str]) -> np.ndarray:
        """Logits (classification) or standardised values (regression), in input order; ``columns``:
        the texts, and the second texts for a model trained on sentence pairs."""
        encoded = encode_columns(self.tokenizer, [[str(t) for t in texts] for texts in columns], self.meta.max_length)
        # serving runs on the CPU at fp32: the same resolution of `auto` as validation's batches
        batches = BatchLimit(self.batch_size, inference_batch_tokens("auto", "cpu", "fp32"))
        return predict_outputs(self.model, encoded, batches, spec=head_spec(self.model, self.meta.pooling))

    def predict_texts(self, *columns: list[str]) -> pd.DataFrame:
        return outputs_to_frame(self.raw_outputs(*columns), self.meta)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.predict_texts(*input_texts(frame, self.meta))
