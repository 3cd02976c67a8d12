"""Tiny random model directories for the serving tests, one per kind of model served: single
texts, sentence pairs, regression and multilabel, each with the post-processing it is served with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune_core.serving.predictor import ModelMeta, save_model_dir

TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the film is strictly routine.",
    "it's a bad sign when you're rooting for the villain",
    "an utterly charming and hilarious film that reminded me of the best of the genre and then some more",
    "ok",
    "",
]
PAIRS = ["a witty film", "routine and dull", "the villain wins", "a charming comedy", "fine", "nothing"]

KINDS = {
    "classification": dict(num_labels=2, meta=dict(labels=["negative", "positive"], temperature=1.7)),
    "pairs": dict(num_labels=3, meta=dict(labels=["a", "b", "c"], text_pair_column="other", pooling="mean")),
    "regression": dict(num_labels=1, meta=dict(target_mean=2.5, target_std=1.3)),
    "multilabel": dict(
        num_labels=3,
        meta=dict(labels=["x", "y", "z"], thresholds=[0.4, 0.5, 0.6], temperatures=[0.8, 1.0, 1.4]),
    ),
}


def task_of(kind: str) -> str:
    return "classification" if kind == "pairs" else kind


def model_dir(backbone: Path, kind: str, target: Path) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = KINDS[kind]
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=spec["num_labels"])
    with torch.no_grad():  # logits far from zero: decisions a random model makes with some margin
        model.classifier.weight.mul_(40.0)
    meta = ModelMeta(task=task_of(kind), text_column="sentence", max_length=24, **spec["meta"])
    return save_model_dir(model, AutoTokenizer.from_pretrained(backbone), meta, target)


def request(kind: str, rows: int = len(TEXTS)) -> pd.DataFrame:
    frame = pd.DataFrame({"sentence": TEXTS[:rows]})
    if kind == "pairs":
        frame["other"] = PAIRS[:rows]
    return frame


def targets(kind: str, rows: int = len(TEXTS)):
    rng = np.random.default_rng(0)
    if kind == "regression":
        return rng.normal(2.5, 1.0, rows).tolist()
    if kind == "multilabel":
        return [[0], [1, 2], [], [0, 1], [2], [1]][:rows]
    return rng.integers(0, KINDS[kind]["num_labels"], rows).tolist()
