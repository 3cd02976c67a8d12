"""The training loops: one epoch loop (validation, early stopping, best-model restore,
per-epoch checkpoints, resume) driving either the head on cached features or the whole
network on length-grouped, dynamically padded batches.

Callbacks are optional (``on_epoch_end``): training runs the same with none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from finetune_core.model.batching import Encoded, collate, length_grouped_batches
from finetune_core.model.heads import forward_logits
from finetune_core.training.checkpoint import Checkpointer, Progress

EpochCallback = Callable[[str, int, dict], None]
STAGE_IDS = {"frozen": 0, "unfrozen": 1}


@dataclass
class StageResult:
    stage: str
    epochs: int
    train_examples: int
    epochs_run: int = 0
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    best_epoch: int = 0
    best_metric: float | None = None
    stopped_early: bool = False
    resumed_after_epoch: int = 0
    extra: dict = field(default_factory=dict)  # stage specifics: feature extraction, cache hits
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
    outputs = outputs.float()
    if task == "classification":
        return F.cross_entropy(outputs, targets)
    return F.mse_loss(outputs.squeeze(-1), targets.to(outputs.dtype))


def targets_tensor(targets: np.ndarray, task: str) -> torch.Tensor:
    return torch.tensor(np.array(targets), dtype=torch.long if task == "classification" else torch.float32)


def epoch_rng(seed: int, stage: str, epoch: int) -> np.random.Generator:
    """Batch order depends only on (seed, stage, epoch): a resumed run sees the same batches."""
    return np.random.default_rng([seed, STAGE_IDS.get(stage, 2), epoch])


class ParameterSubset:
    """state_dict/load_state_dict over some of a model's parameters (the head, in the frozen
    stage), so per-epoch checkpoints stay as small as what actually learns."""

    def __init__(self, model, names: set[str]):
        self.model, self.names = model, names

    def state_dict(self) -> dict:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if n in self.names}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state, strict=False)


@dataclass
class EpochLoop:
    """Runs epochs with validation, early stopping, best restore and checkpoints."""

    stage: str
    epochs: int
    train_examples: int
    metric: str  # validation metric selecting the best epoch, e.g. "val_accuracy"
    larger_is_better: bool
    patience: int | None = None
    keep_best: bool = True
    max_seconds: float | None = None  # training-time budget of the stage
    deadline: float | None = None  # set by run(); train_epoch stops its batches there
    checkpointer: Checkpointer = field(default_factory=lambda: Checkpointer(None))
    on_epoch_end: EpochCallback | None = None

    def _improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.larger_is_better else value < best

    def run(self, state, train_epoch, validate, optimizer=None, scheduler=None, resume: bool = False) -> StageResult:
        """``train_epoch(epoch) -> mean loss``; ``validate() -> metrics``; ``state`` has state_dict()."""
        result = StageResult(stage=self.stage, epochs=self.epochs, train_examples=self.train_examples)
        progress = self.checkpointer.load_progress() if resume else None
        if progress is not None:
            self.checkpointer.restore(state, optimizer, scheduler)
            result.resumed_after_epoch = progress.epoch
        else:
            progress = Progress(stage=self.stage)
        best_state = self.checkpointer.best_state() if progress.best_epoch else None
        started = time.perf_counter()
        self.deadline = started + self.max_seconds if self.max_seconds else None
        stop = progress.done
        for epoch in range(progress.epoch + 1, self.epochs + 1):
            if stop:
                break
            epoch_started = time.perf_counter()
            loss = train_epoch(epoch)
            progress.train_seconds += time.perf_counter() - epoch_started
            metrics = {"train_loss": loss, **{f"val_{k}": v for k, v in validate().items()}}
            if scheduler is not None:
                metrics["learning_rate"] = scheduler.get_last_lr()[-1]
            progress.history.append({"epoch": epoch, **metrics})
            if self._improved(metrics[self.metric], progress.best_metric):
                progress.best_metric, progress.best_epoch, progress.epochs_without_improvement = (
                    metrics[self.metric],
                    epoch,
                    0,
                )
                best_state = {k: v.detach().clone() for k, v in state.state_dict().items()}
                self.checkpointer.save_best(state)
            else:
                progress.epochs_without_improvement += 1
            progress.epoch = epoch
            stop = bool(self.patience) and progress.epochs_without_improvement >= self.patience
            result.stopped_early = stop and epoch < self.epochs
            if self.deadline is not None and time.perf_counter() >= self.deadline:
                stop, result.extra["time_budget_reached"] = True, True
            self.checkpointer.save_epoch(progress, state, optimizer, scheduler)
            if self.on_epoch_end is not None:
                self.on_epoch_end(self.stage, epoch, metrics)
        if self.keep_best and best_state is not None:  # the best epoch, not the last
            state.load_state_dict(best_state)
        progress.done = True
        self.checkpointer.save_progress(progress)
        result.epochs_run = progress.epoch
        result.history = progress.history
        result.best_epoch, result.best_metric = progress.best_epoch, progress.best_metric
        result.train_seconds = progress.train_seconds
        result.wall_seconds = time.perf_counter() - started
        result.samples_per_second = self.train_examples * progress.epoch / max(progress.train_seconds, 1e-9)
        return result


def head_epoch(
    model,
    head,
    features: torch.Tensor,
    targets: torch.Tensor,
    task,
    optimizer,
    scheduler,
    batch_size,
    rng,
    max_grad_norm,
):
    """One epoch of the head alone on cached backbone features."""
    model.train()
    model.base_model.eval()
    parameters = [p for g in optimizer.param_groups for p in g["params"]]
    total, seen = 0.0, 0
    for batch in np.array_split(rng.permutation(len(features)), max(1, -(-len(features) // batch_size))):
        loss = compute_loss(head(model, features[batch]), targets[batch], task)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        total += float(loss.detach()) * len(batch)
        seen += len(batch)
    return total / max(seen, 1)


def network_epoch(
    model,
    spec,
    encoded: Encoded,
    targets,
    task,
    optimizer,
    scheduler,
    batch_size,
    rng,
    max_grad_norm,
    runtime,
    frozen_backbone=False,
    deadline: float | None = None,
    dist=None,
):
    """One epoch of the network on length-grouped, dynamically padded batches (cut short at
    ``deadline``, a time.perf_counter() value). ``dist``: a data-parallel context; this rank
    trains on its share of each global batch and gradients are summed across ranks; the
    returned loss is the mean over every rank's rows."""
    model.train()
    if frozen_backbone:  # a frozen backbone is a fixed feature extractor: no dropout inside it
        model.base_model.eval()
    parameters = [p for g in optimizer.param_groups for p in g["params"]]
    trainable = [p for p in parameters if p.requires_grad]
    total, seen = 0.0, 0
    for whole in length_grouped_batches(encoded.lengths, batch_size, rng):
        batch = whole if dist is None else dist.shard(whole)
        if len(batch):
            inputs = {k: v.to(runtime.device) for k, v in collate(encoded, batch).items()}
            with runtime.autocast():
                outputs = forward_logits(model, spec, inputs)
            loss = compute_loss(outputs, targets[batch].to(runtime.device), task)
            (loss if dist is None else loss * (len(batch) / len(whole))).backward()
        if dist is not None:
            dist.sync_gradients(trainable)
        torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if len(batch):
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
        if deadline is not None and time.perf_counter() >= deadline:
            break
    if dist is not None:
        total, seen = dist.sum_over_ranks(total, seen)
    return total / max(seen, 1)
