"""What every training stage sets up from the config the same way: the epoch loop, class (or
positive-label) weights, and saving a finished stage's model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.multilabel import pos_weight_vector
from finetune_core.data.prepare import PreparedData
from finetune_core.metric_table import primary_metric
from finetune_core.progress import SILENT
from finetune_core.serving.predictor import save_model_dir
from finetune_core.training.checkpoint import Checkpointer
from finetune_core.training.loop import EpochLoop, StageResult, mark_finished
from finetune_core.training.losses import class_weight_vector


def stage_loop(
    config, prepared, stage, epochs, checkpoints, on_epoch_end, max_seconds=None, progress=SILENT, train_rows=None
) -> EpochLoop:
    metric, larger = primary_metric(prepared.task, config.training.metric)
    return EpochLoop(
        stage=stage,
        epochs=epochs,
        train_examples=prepared.rows["train"] if train_rows is None else train_rows,
        metric=f"val_{metric}",
        larger_is_better=larger,
        patience=config.training.early_stopping_patience,
        keep_best=config.training.keep_best,
        checkpointer=Checkpointer(Path(checkpoints) / stage if checkpoints else None),
        on_epoch_end=on_epoch_end,
        max_seconds=max_seconds,
        reporter=progress,
    )


def stage_class_weights(config: FinetuneConfig, prepared: PreparedData, train_labels: np.ndarray):
    if prepared.task == "multilabel":  # positive weights of the binary cross-entropy, one per label
        # Unset: balanced, for labels with a handful of rows, at the cost of more false positives
        # (docs/benchmarks/multilabel.md).
        setting = config.training.pos_weight if config.training.pos_weight is not None else "balanced"
        weights = pos_weight_vector(setting, prepared.labels, train_labels)
        return None if weights is None else torch.tensor(weights, dtype=torch.float32)
    if prepared.task != "classification":
        return None
    return class_weight_vector(config.training.class_weights, prepared.labels, train_labels)


def save_stage(model, tokenizer, meta, out_dir: Path, result: StageResult) -> StageResult:
    save_model_dir(model, tokenizer, meta, out_dir)
    return mark_finished(out_dir, result)
