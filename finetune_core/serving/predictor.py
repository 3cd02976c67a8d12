"""A trained model directory (weights, tokenizer, metadata) and the predictor that serves it.

The directory is what gets logged to MLflow; the MLflow pyfunc wrapper only delegates here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from finetune_core.model.batching import BatchLimit, encode, inference_batch_tokens
from finetune_core.model.heads import head_spec
from finetune_core.model.inference import predict_outputs
from finetune_core.model.loading import MODEL_LOADING

META_FILE = "finetune_meta.json"


class ModelMeta(BaseModel):
    task: str
    text_column: str
    text_pair_column: str | None = None  # sentence pairs: the second text's column
    max_length: int
    labels: list[str] | None = None
    target_mean: float = 0.0
    target_std: float = 1.0
    temperature: float = 1.0  # fitted by calibration; 1.0 = uncalibrated
    # Multilabel: per label, the decision threshold tuned on validation (None: 0.5 for all) and the
    # fitted temperature (None: uncalibrated); what calibration skipped and why.
    thresholds: list[float] | None = None
    temperatures: list[float] | None = None
    calibration_notes: list[str] = []
    pooling: str = "native"  # what the head reads (finetune_core.heads)
    backbone: str = ""


def save_model_dir(model, tokenizer, meta: ModelMeta, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_meta(meta, directory)
    return directory


def write_meta(meta: ModelMeta, directory: str | Path) -> None:
    (Path(directory) / META_FILE).write_text(meta.model_dump_json(indent=2), encoding="utf-8")


def load_meta(directory: str | Path) -> ModelMeta:
    return ModelMeta.model_validate_json((Path(directory) / META_FILE).read_text(encoding="utf-8"))


def load_model_dir(directory: str | Path):
    """(model, tokenizer, meta) from a directory written by ``save_model_dir``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = Path(directory)
    with MODEL_LOADING:
        model = AutoModelForSequenceClassification.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return model, tokenizer, load_meta(directory)


def multilabel_frame(outputs: np.ndarray, meta: ModelMeta) -> pd.DataFrame:
    """``labels`` (the list of labels whose probability reaches their tuned threshold) plus
    ``probability_<label>`` columns (per-label temperature applied)."""
    scaled = outputs.astype(np.float64) / (np.asarray(meta.temperatures) if meta.temperatures else 1.0)
    probabilities = np.exp(-np.logaddexp(0.0, -scaled))  # sigmoid without overflow at large |logits|
    chosen = probabilities >= (np.asarray(meta.thresholds) if meta.thresholds else 0.5)
    columns = {"labels": [[meta.labels[j] for j in np.flatnonzero(row)] for row in chosen]}
    columns.update({f"probability_{name}": probabilities[:, i] for i, name in enumerate(meta.labels)})
    return pd.DataFrame(columns)


def outputs_to_frame(outputs: np.ndarray, meta: ModelMeta) -> pd.DataFrame:
    """Classification: ``label`` plus ``probability_<class>`` columns; multilabel: ``labels`` plus
    ``probability_<label>``; regression: ``prediction``."""
    if meta.task == "multilabel":
        return multilabel_frame(outputs, meta)
    if meta.task == "regression":
        return pd.DataFrame({"prediction": outputs.reshape(-1).astype(np.float64) * meta.target_std + meta.target_mean})
    scaled = outputs.astype(np.float64) / meta.temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    probabilities = np.exp(scaled)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"label": [meta.labels[i] for i in probabilities.argmax(axis=1)]})
    for i, name in enumerate(meta.labels):
        frame[f"probability_{name}"] = probabilities[:, i]
    return frame


class Predictor:
    def __init__(self, model, tokenizer, meta: ModelMeta, batch_size: int = 64):
        self.model, self.tokenizer, self.meta, self.batch_size = model.eval(), tokenizer, meta, batch_size

    @classmethod
    def load(cls, directory: str | Path, batch_size: int = 64) -> Predictor:
        return cls(*load_model_dir(directory), batch_size=batch_size)

    def raw_outputs(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        """Logits (classification) or standardised values (regression), in input order; ``pairs``:
        the second texts, for a model trained on sentence pairs."""
        pairs = None if pairs is None else [str(t) for t in pairs]
        encoded = encode(self.tokenizer, [str(t) for t in texts], self.meta.max_length, pairs)
        # serving runs on the CPU at fp32: the same resolution of `auto` as validation's batches
        batches = BatchLimit(self.batch_size, inference_batch_tokens("auto", "cpu", "fp32"))
        return predict_outputs(self.model, encoded, batches, spec=head_spec(self.model, self.meta.pooling))

    def predict_texts(self, texts: list[str], pairs: list[str] | None = None) -> pd.DataFrame:
        return outputs_to_frame(self.raw_outputs(texts, pairs), self.meta)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        column, pair = self.meta.text_column, self.meta.text_pair_column
        if pair is not None:  # two texts: both columns by name, nothing to guess
            missing = [c for c in (column, pair) if c not in frame.columns]
            if missing:
                raise ValueError(
                    f"input needs column(s) {', '.join(map(repr, missing))} for sentence pairs "
                    f"(got {', '.join(map(str, frame.columns))})"
                )
            return self.predict_texts(frame[column].tolist(), frame[pair].tolist())
        if column not in frame.columns:
            if len(frame.columns) != 1:
                raise ValueError(f"input needs a {column!r} column (got {', '.join(map(str, frame.columns))})")
            column = frame.columns[0]  # a single unnamed text column is unambiguous
        return self.predict_texts(frame[column].tolist())
