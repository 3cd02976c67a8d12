"""Pipeline steps as plain functions over paths: each reads its inputs from disk and writes
its output directory, so the Prefect tasks wrapping them hand each other references only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from finetune_core.backbone import load_for_task, load_tokenizer
from finetune_core.batching import Encoded, encode
from finetune_core.config import FinetuneConfig
from finetune_core.data import LABEL, TEXT, PreparedData
from finetune_core.evaluation import score_outputs
from finetune_core.predict import ModelMeta, load_model_dir, save_model_dir
from finetune_core.training import EpochCallback, StageResult, predict_outputs, seed_everything, train_stage


def _configure_torch(config: FinetuneConfig) -> None:
    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)


def _split(prepared: PreparedData, split: str, tokenizer, max_length: int) -> tuple[Encoded, np.ndarray]:
    frame = prepared.frame(split)
    targets = frame[LABEL].to_numpy()
    if prepared.task == "regression":  # train on standardised targets; metrics undo it
        targets = (targets - prepared.target_mean) / prepared.target_std
    return encode(tokenizer, frame[TEXT].tolist(), max_length), targets


def _scorer(prepared: PreparedData):
    def score(outputs: np.ndarray, targets: np.ndarray) -> dict:
        if prepared.task == "regression":
            targets = targets * prepared.target_std + prepared.target_mean
        return score_outputs(prepared.task, outputs, targets, prepared.labels, prepared.target_mean, prepared.target_std)

    return score


def _run_stage(config, prepared, model, tokenizer, meta, stage, out_dir, on_epoch_end) -> StageResult:
    frozen = stage == "frozen"
    stage_config = config.training.frozen if frozen else config.training.unfrozen
    max_length = config.training.max_length
    result = train_stage(
        model,
        stage,
        train=_split(prepared, "train", tokenizer, max_length),
        validation=_split(prepared, "validation", tokenizer, max_length),
        task=prepared.task,
        stage_config=stage_config,
        training=config.training,
        score=_scorer(prepared),
        frozen_backbone=frozen,
        on_epoch_end=on_epoch_end,
    )
    save_model_dir(model, tokenizer, meta, out_dir)
    return result


def train_frozen(
    config: FinetuneConfig, prepared: PreparedData, backbone: str, out_dir: Path, on_epoch_end: EpochCallback | None = None
) -> StageResult:
    """Stage 1: a fresh task head on ``backbone``, trained with the backbone frozen."""
    _configure_torch(config)
    seed_everything(config.training.seed)  # the head's initialisation depends on it
    trust = config.backbone.trust_remote_code
    tokenizer = load_tokenizer(backbone, trust)
    model = load_for_task(backbone, prepared.task, prepared.labels, trust)
    meta = ModelMeta(
        task=prepared.task,
        text_column=prepared.text_column,
        max_length=config.training.max_length,
        labels=prepared.labels,
        target_mean=prepared.target_mean,
        target_std=prepared.target_std,
        backbone=backbone,
    )
    return _run_stage(config, prepared, model, tokenizer, meta, "frozen", out_dir, on_epoch_end)


def train_unfrozen(
    config: FinetuneConfig, prepared: PreparedData, checkpoint: Path, out_dir: Path, on_epoch_end: EpochCallback | None = None
) -> StageResult:
    """Stage 2: continue from the stage-1 checkpoint with every parameter learning."""
    _configure_torch(config)
    seed_everything(config.training.seed + 1)
    model, tokenizer, meta = load_model_dir(checkpoint)
    return _run_stage(config, prepared, model, tokenizer, meta, "unfrozen", out_dir, on_epoch_end)


def evaluate_checkpoint(config: FinetuneConfig, prepared: PreparedData, checkpoint: Path, split: str = "test") -> dict:
    """Metrics of a saved model on one prepared split (classification: accuracy, macro-F1,
    per-class precision/recall; regression: MSE, MAE, R², Spearman)."""
    _configure_torch(config)
    model, tokenizer, _ = load_model_dir(checkpoint)
    encoded, targets = _split(prepared, split, tokenizer, config.training.max_length)
    outputs = predict_outputs(model, encoded, config.training.eval_batch_size)
    return _scorer(prepared)(outputs, targets)
