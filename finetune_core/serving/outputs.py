"""A model directory's metadata and the post-processing every runtime shares: raw outputs
(logits, or standardised values) to the served frame, with the calibration temperature, the
multilabel thresholds and the regression scaling applied. numpy, pandas and pydantic only, so
a serving install without torch imports it (docs/how-to/serving.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

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

    @property
    def input_columns(self) -> list[str]:
        """The request's text columns, in tokenisation order: the text (and a pair's second text)."""
        return [c for c in (self.text_column, self.text_pair_column) if c is not None]


def text_column_fields(sources) -> dict[str, str]:
    """``ModelMeta``'s fields for the source text columns ``sources`` (one, or two for sentence
    pairs, in order): the meta file keeps the two keys older champions were saved with."""
    return dict(zip(("text_column", "text_pair_column"), sources))


def write_meta(meta: ModelMeta, directory: str | Path) -> None:
    from finetune_core.durable import write_atomic  # at save time only: serving never writes

    write_atomic(Path(directory) / META_FILE, meta.model_dump_json(indent=2))


def load_meta(directory: str | Path) -> ModelMeta:
    return ModelMeta.model_validate_json((Path(directory) / META_FILE).read_text(encoding="utf-8"))


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


def input_texts(frame: pd.DataFrame, meta: ModelMeta) -> list[list[str]]:
    """The texts of each of the model's input columns (``ModelMeta.input_columns``) from a request
    frame, by name; a single unnamed text column is unambiguous."""
    columns = meta.input_columns
    if len(columns) == 1 and columns[0] not in frame.columns and len(frame.columns) == 1:
        columns = list(frame.columns)  # one text, one column: whatever its name
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"input needs column(s) {', '.join(map(repr, missing))} (got {', '.join(map(str, frame.columns))})"
        )
    return [[str(t) for t in frame[c]] for c in columns]
