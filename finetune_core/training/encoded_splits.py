"""A prepared split as the model reads it (token ids memory-mapped from a cache beside the
prepared file, and targets), a model's raw outputs on it, and their scores in the task's metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.labels import read_labels
from finetune_core.data.multilabel import label_matrix
from finetune_core.data.prepare import PreparedData
from finetune_core.errors import ConfigError
from finetune_core.metrics.scores import score_outputs
from finetune_core.model.batching import BatchLimit, Encoded
from finetune_core.model.heads import head_spec
from finetune_core.model.inference import predict_outputs
from finetune_core.model.tokenized import encode_file
from finetune_core.serving.predictor import load_model_dir
from finetune_core.training.device import eval_batches, runtime_for


def split_tokens(prepared: PreparedData, split: str, tokenizer, max_length: int) -> tuple[Encoded, np.ndarray]:
    """(token ids memory-mapped from a cache beside the prepared file, targets)."""
    path = Path(prepared.paths[split])
    targets = read_labels(path)
    if prepared.task == "regression":  # train on standardised targets; metrics undo it
        targets = (targets - prepared.target_mean) / prepared.target_std
    elif prepared.task == "multilabel":  # label ids per row -> multi-hot matrix
        targets = label_matrix(targets, len(prepared.labels))
    return encode_file(tokenizer, path, max_length, path.parent / "tokens"), targets


def spec_for(model, pooling: str):
    """The head spec of ``model`` with ``pooling``; an unavailable pooling is a config error."""
    try:
        return head_spec(model, pooling)
    except ValueError as exc:
        raise ConfigError(f"backbone.pooling: {exc}") from None


def outputs_for(config: FinetuneConfig, prepared: PreparedData, checkpoint: Path, split: str):
    """(raw outputs, targets, model metadata) of a saved model on one prepared split."""
    runtime = runtime_for(config.training, checkpoint).for_inference()
    model, tokenizer, meta = load_model_dir(checkpoint)
    encoded, targets = split_tokens(prepared, split, tokenizer, config.training.max_length)
    model.to(runtime.device)
    spec = spec_for(model, meta.pooling)
    outputs = predict_outputs(
        model, encoded, eval_batches(config.training, runtime), runtime.device, runtime.autocast, spec
    )
    return outputs, targets, meta


def score_split(prepared: PreparedData, outputs: np.ndarray, targets: np.ndarray) -> dict:
    if prepared.task == "regression":
        targets = targets * prepared.target_std + prepared.target_mean
    return score_outputs(prepared.task, outputs, targets, prepared.labels, prepared.target_mean, prepared.target_std)


def score_network(prepared: PreparedData, network, validation, batches: BatchLimit, runtime, spec) -> dict:
    """``validation`` (encoded rows, targets) scored by full forward passes of ``network``."""
    runtime = runtime.for_inference()
    outputs = predict_outputs(network, validation[0], batches, runtime.device, runtime.autocast, spec)
    return score_split(prepared, outputs, validation[1])
