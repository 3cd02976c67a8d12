"""What every training stage sets up the same way: its inputs (``StageInputs``) and data
(``StageData``), the epoch loop from the config, class (or positive-label) weights, and saving a
finished stage's model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.multilabel import pos_weight_vector
from finetune_core.data.prepare import PreparedData
from finetune_core.metric_table import primary_metric
from finetune_core.model.batching import Encoded, take_encoded
from finetune_core.progress import SILENT, ProgressReporter
from finetune_core.serving.predictor import save_model_dir
from finetune_core.training.checkpoint import Checkpointer
from finetune_core.training.encoded_splits import split_tokens
from finetune_core.training.loop import EpochCallback, EpochLoop, StageResult, StepSettings, mark_finished
from finetune_core.training.losses import class_weight_vector, targets_tensor


@dataclass(frozen=True)
class StageInputs:
    """What every stage's entry point is given: the run's config and prepared data, where it starts
    from (a backbone, or the previous stage's model directory), where it writes, who hears its
    epochs and batches, and where its per-epoch checkpoints live (``resume``: continue from them)."""

    config: FinetuneConfig
    prepared: PreparedData
    start: Path | str  # a backbone (id or directory), or the previous stage's model directory
    out_dir: Path
    on_epoch_end: EpochCallback | None = None
    checkpoints: Path | None = None
    resume: bool = False
    progress: ProgressReporter = SILENT
    margins_file: Path | None = None  # stage 2, classification: each train row's margin per epoch (training.margins)


@dataclass(frozen=True)
class StageData:
    """A stage's train and validation splits as the model reads them, with the train targets as a
    tensor and the class weights they give."""

    train: Encoded
    train_labels: np.ndarray  # as read: standardised regression targets, multi-hot label rows
    train_targets: torch.Tensor
    validation: Encoded
    validation_targets: np.ndarray
    class_weights: torch.Tensor | None

    @classmethod
    def read(cls, inputs: StageInputs, tokenizer) -> StageData:
        """The splits of ``inputs.prepared``, tokenised for ``tokenizer``."""
        max_length = inputs.config.training.max_length
        train, validation = (split_tokens(inputs.prepared, s, tokenizer, max_length) for s in ("train", "validation"))
        return cls._of(inputs, train, validation)

    def sampled(self, inputs: StageInputs, rows: np.ndarray) -> StageData:
        """The same splits, training on those train ``rows`` only (by position)."""
        train = (take_encoded(self.train, rows), self.train_labels[rows])
        return self._of(inputs, train, (self.validation, self.validation_targets))

    @classmethod
    def _of(cls, inputs: StageInputs, train, validation) -> StageData:
        targets = targets_tensor(train[1], inputs.prepared.task)
        weights = stage_class_weights(inputs.config, inputs.prepared, train[1])
        return cls(train[0], train[1], targets, validation[0], validation[1], weights)

    def step_settings(self, inputs: StageInputs, optimizer, scheduler, runtime=None) -> StepSettings:
        training = inputs.config.training
        return StepSettings(
            task=inputs.prepared.task,
            optimizer=optimizer,
            scheduler=scheduler,
            batch_size=training.batch_size,
            max_grad_norm=training.max_grad_norm,
            runtime=runtime,
            class_weights=self.class_weights,
            progress=inputs.progress,
        )


def stage_loop(
    inputs: StageInputs, stage: str, epochs: int, max_seconds: float | None = None, train_rows: int | None = None
) -> EpochLoop:
    """The epoch loop of ``stage`` as the config sets it (metric, patience, best restore, checkpoints)."""
    config, prepared, checkpoints = inputs.config, inputs.prepared, inputs.checkpoints
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
        on_epoch_end=inputs.on_epoch_end,
        max_seconds=max_seconds,
        reporter=inputs.progress,
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
