"""The two training stages: head only with the backbone frozen, then everything unfrozen.

A plain, correct loop over dynamically padded, length-grouped batches. Callbacks are
optional (``on_epoch_end``): training runs the same with none.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from finetune_core.batching import Encoded, collate, length_grouped_batches, sorted_batches
from finetune_core.config import StageConfig, TrainingConfig

EpochCallback = Callable[[str, int, dict], None]
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight")


@dataclass
class StageResult:
    stage: str
    epochs: int
    train_examples: int
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    history: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def compute_loss(outputs: torch.Tensor, targets: torch.Tensor, task: str) -> torch.Tensor:
    """Loss follows the task type: cross-entropy for classes, mean squared error for targets."""
    if task == "classification":
        return F.cross_entropy(outputs, targets)
    return F.mse_loss(outputs.squeeze(-1), targets.to(outputs.dtype))


def set_backbone_trainable(model, trainable: bool) -> None:
    for parameter in model.base_model.parameters():
        parameter.requires_grad_(trainable)


def head_parameters(model) -> list[torch.nn.Parameter]:
    backbone = {id(p) for p in model.base_model.parameters()}
    return [p for p in model.parameters() if id(p) not in backbone]


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups over trainable parameters; biases and LayerNorm weights get no decay."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name.endswith(NO_DECAY) else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@torch.inference_mode()
def predict_outputs(model, encoded: Encoded, batch_size: int) -> np.ndarray:
    """Raw outputs (logits or values) in the original row order."""
    was_training = model.training
    model.eval()
    results: list[np.ndarray | None] = [None] * len(encoded)
    for batch in sorted_batches(encoded.lengths, batch_size):
        logits = model(**collate(encoded, batch)).logits.float().numpy()
        for row, index in enumerate(batch):
            results[index] = logits[row]
    model.train(was_training)
    return np.stack(results) if results else np.zeros((0, model.config.num_labels), dtype=np.float32)


def _targets_tensor(targets: np.ndarray, task: str) -> torch.Tensor:
    return torch.tensor(np.array(targets), dtype=torch.long if task == "classification" else torch.float32)


def train_stage(
    model,
    stage: str,
    train: tuple[Encoded, np.ndarray],
    validation: tuple[Encoded, np.ndarray],
    task: str,
    stage_config: StageConfig,
    training: TrainingConfig,
    score: Callable[[np.ndarray, np.ndarray], dict],
    frozen_backbone: bool,
    on_epoch_end: EpochCallback | None = None,
) -> StageResult:
    """Train for ``stage_config.epochs`` epochs; validate after each; return timings and history."""
    from transformers import get_linear_schedule_with_warmup

    train_encoded, train_targets = train
    targets = _targets_tensor(train_targets, task)
    result = StageResult(stage=stage, epochs=stage_config.epochs, train_examples=len(train_encoded))
    if stage_config.epochs == 0:
        return result

    set_backbone_trainable(model, not frozen_backbone)
    # A fresh optimizer per stage, over exactly the parameters that learn in it.
    optimizer = torch.optim.AdamW(parameter_groups(model, training.weight_decay), lr=stage_config.learning_rate)
    steps_per_epoch = -(-len(train_encoded) // training.batch_size)
    total_steps = steps_per_epoch * stage_config.epochs
    warmup = 0 if frozen_backbone else int(training.warmup_ratio * total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    rng = np.random.default_rng([training.seed, 0 if frozen_backbone else 1])
    lengths = train_encoded.lengths
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    show_progress = sys.stderr.isatty()

    started = time.perf_counter()
    for epoch in range(1, stage_config.epochs + 1):
        model.train()
        if frozen_backbone:  # a frozen backbone is a fixed feature extractor: no dropout inside it
            model.base_model.eval()
        epoch_started, loss_sum, seen = time.perf_counter(), 0.0, 0
        batches = length_grouped_batches(lengths, training.batch_size, rng)
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"{stage} epoch {epoch}/{stage_config.epochs}", leave=False)
        for batch in batches:
            outputs = model(**collate(train_encoded, batch)).logits
            loss = compute_loss(outputs, targets[batch], task)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, training.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach()) * len(batch)
            seen += len(batch)
        result.train_seconds += time.perf_counter() - epoch_started

        val_encoded, val_targets = validation
        metrics = {"train_loss": loss_sum / max(seen, 1)}
        metrics.update({f"val_{k}": v for k, v in score(predict_outputs(model, val_encoded, training.eval_batch_size), val_targets).items()})
        metrics["learning_rate"] = scheduler.get_last_lr()[0]
        result.history.append({"epoch": epoch, **metrics})
        if on_epoch_end is not None:
            on_epoch_end(stage, epoch, metrics)

    set_backbone_trainable(model, True)
    result.wall_seconds = time.perf_counter() - started
    result.samples_per_second = len(train_encoded) * stage_config.epochs / max(result.train_seconds, 1e-9)
    return result
