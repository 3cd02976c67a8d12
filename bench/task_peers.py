"""The peers bench/task_kinds.py measures ours against, on the same rows and backbone: HF Trainer with
run_glue defaults (pairs and multilabel BCE), and a frozen-encoder one-vs-rest logistic regression
with tuned thresholds for multilabel."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pandas as pd
import torch

from bench.hf_baseline import run_glue_arguments
from finetune_core.data.multilabel import label_matrix
from finetune_core.data.prepare import LABEL, TEXT, TEXT_PAIR
from finetune_core.metrics.multilabel import multilabel_metrics, tune_thresholds
from finetune_core.model.backbone import resolve_backbone

BACKBONE = "bundled:all-MiniLM-L6-v2"


def hf_train(
    train: pd.DataFrame, evaluate: dict[str, pd.DataFrame], labels: int, multilabel: bool, bf16: bool, seed: int = 42
):
    """HF Trainer with run_glue defaults; returns (raw outputs per evaluated split, train seconds, samples/s)."""
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    backbone = resolve_backbone(BACKBONE)
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(backbone)

    def tokenize(frame: pd.DataFrame, with_labels: bool = True):
        pairs = frame[TEXT_PAIR].tolist() if TEXT_PAIR in frame else None
        encoded = dict(tokenizer(frame[TEXT].tolist(), pairs, truncation=True, max_length=128))
        if with_labels:
            targets = frame[LABEL].to_numpy()
            encoded["labels"] = label_matrix(targets, labels).tolist() if multilabel else targets.tolist()
        return datasets.Dataset.from_dict(encoded)

    head = {"problem_type": "multi_label_classification"} if multilabel else {}
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=labels, **head)
    with tempfile.TemporaryDirectory() as out:
        args = run_glue_arguments(out, 3, 32, bf16, seed, group_by_length=True)
        trainer = Trainer(
            model=model, args=args, train_dataset=tokenize(train), data_collator=DataCollatorWithPadding(tokenizer)
        )
        started = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - started
        # Trainer evaluates with a length-grouped sampler when training groups by length: its
        # predictions would come back reordered against the frame's rows (as if shuffled: accuracy
        # at chance, ROC-AUC 0.5). Sequential order for prediction.
        trainer.args.train_sampling_strategy = "random"
        outputs = {}
        for split, frame in evaluate.items():
            predicted = trainer.predict(tokenize(frame, with_labels=False))
            outputs[split] = np.asarray(predicted.predictions, dtype=np.float64)
    return outputs, seconds, len(train) * 3 / output.metrics["train_runtime"]


def frozen_features(frames: dict[str, pd.DataFrame], runtime) -> dict[str, np.ndarray]:
    """Mean-pooled last hidden states of the frozen backbone (its sentence-transformers pooling), max length 128."""
    from transformers import AutoModel, AutoTokenizer

    backbone = resolve_backbone(BACKBONE)
    tokenizer, model = AutoTokenizer.from_pretrained(backbone), AutoModel.from_pretrained(backbone).eval()
    features = {}
    for split, frame in frames.items():
        texts, parts = frame[TEXT].tolist(), []
        order = np.argsort([len(t) for t in texts])
        with torch.inference_mode(), runtime.autocast():
            for start in range(0, len(texts), 128):
                rows = order[start : start + 128]
                batch = tokenizer(
                    [texts[i] for i in rows], truncation=True, max_length=128, padding=True, return_tensors="pt"
                )
                hidden = model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                parts.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
        pooled = np.concatenate(parts)
        features[split] = np.empty_like(pooled)
        features[split][order] = pooled
    return features


def one_vs_rest_probe(features: dict[str, np.ndarray], truth: dict[str, np.ndarray], names: list[str]) -> dict:
    """One logistic regression per label on frozen features; C and the thresholds chosen on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    best = None
    started = time.perf_counter()
    for c in (0.1, 1.0, 10.0, 100.0):
        model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000))
        model.fit(features["train"], truth["train"])
        val = model.predict_proba(features["validation"])
        thresholds, _, _ = tune_thresholds(val, truth["validation"], truth["train"].sum(axis=0) > 0)
        score = multilabel_metrics(truth["validation"], val, val >= thresholds, names)["f1_macro"]
        if best is None or score > best[0]:
            best = (score, c, model, thresholds)
    seconds = time.perf_counter() - started
    _, c, model, thresholds = best
    test = model.predict_proba(features["test"])
    raw = {"logreg_validation": model.predict_proba(features["validation"]), "logreg_test": test}
    return raw, {
        "C": c,
        "fit_seconds_4_values_of_C": seconds,
        "metrics": multilabel_metrics(truth["test"], test, test >= thresholds, names),
    }
