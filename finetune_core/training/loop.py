"""The training loops: one epoch loop (validation, early stopping, best-model restore,
per-epoch checkpoints, resume) driving either the head on cached features or the whole
network on length-grouped, dynamically padded batches.

Callbacks are optional (``on_epoch_end``, ``progress``): training runs the same with none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from finetune_core.durable import read_json_or_none, write_json_atomic
from finetune_core.faults import maybe_kill
from finetune_core.model.batching import MEGABATCH_FACTOR, Encoded, collate, length_grouped_batches
from finetune_core.model.heads import forward_logits
from finetune_core.progress import SILENT, ProgressReporter
from finetune_core.training.checkpoint import Checkpointer, Progress
from finetune_core.training.losses import compute_loss

EpochCallback = Callable[[str, int, dict], None]


class StopStage(Exception):
    """Raised by an epoch callback (a search's pruner) to end the stage cleanly after this epoch:
    the best epoch's weights are kept and the stage's result says why (``extra["stopped_by"]``)."""


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


RESULT_FILE = "stage_result.json"  # in a stage's output directory, written last: the stage is done


def finished_stage(out_dir: Path, resume: bool) -> StageResult | None:
    """The result of a stage already finished in ``out_dir`` (when resuming), else None: a
    missing or unreadable result (a kill while it was written) means the stage is not done."""
    saved = read_json_or_none(Path(out_dir) / RESULT_FILE) if resume else None
    try:
        return StageResult(**saved) if isinstance(saved, dict) else None
    except TypeError:  # fields of another version: redo the stage rather than guess
        return None


def mark_finished(out_dir: Path, result: StageResult) -> StageResult:
    """Write the stage's result after everything else in ``out_dir``: from now on it is done."""
    maybe_kill(f"stage-result:{result.stage}")
    write_json_atomic(Path(out_dir) / RESULT_FILE, result.as_dict())
    return result


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def head_batches(rows: int, batch_size: int) -> int:
    """Batches of one ``head_epoch`` over ``rows`` cached feature rows."""
    return max(1, -(-rows // batch_size))


def network_batches(rows: int, batch_size: int) -> int:
    """Batches of one ``network_epoch``: ``length_grouped_batches`` cuts each megabatch apart."""
    full, rest = divmod(rows, batch_size * MEGABATCH_FACTOR)
    return full * MEGABATCH_FACTOR + -(-rest // batch_size)


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
    reporter: ProgressReporter = SILENT  # hears each epoch's start and end; train_epoch reports its batches
    batches_per_epoch: int = 0

    def _improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.larger_is_better else value < best

    def _report_unreported(self, progress: Progress) -> None:
        """Epochs committed but never reported (the callback failed, e.g. the tracking server was
        down, or the process died between the two) are reported on resume, so none is missing."""
        if self.on_epoch_end is None:
            return
        reported = self.checkpointer.reported_epoch()
        for entry in progress.history:
            if entry["epoch"] > reported:
                self.on_epoch_end(self.stage, entry["epoch"], {k: v for k, v in entry.items() if k != "epoch"})
                self.checkpointer.save_reported(entry["epoch"])

    def run(self, state, train_epoch, validate, optimizer=None, scheduler=None, resume: bool = False) -> StageResult:
        """``train_epoch(epoch) -> mean loss`` (or an ``EpochOutcome``: loss and rows trained, for an
        epoch the deadline may cut short); ``validate() -> metrics``; ``state`` has state_dict()."""
        result = StageResult(stage=self.stage, epochs=self.epochs, train_examples=self.train_examples)
        progress = self._begin(result, state, optimizer, scheduler, resume)
        best_state = self.checkpointer.best_state() if progress.best_epoch else None
        started = time.perf_counter()
        self.deadline = started + self.max_seconds if self.max_seconds else None
        stop = progress.done
        for epoch in range(progress.epoch + 1, self.epochs + 1):
            if stop:
                break
            metrics = self._train_and_validate(epoch, result, progress, train_epoch, validate, scheduler)
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
            stop = self._stops_after(epoch, result, progress)
            progress.done = stop or epoch == self.epochs  # committed with the epoch: resume never trains past a stop
            self.checkpointer.save_epoch(progress, state, optimizer, scheduler)
            maybe_kill(f"epoch:{self.stage}:{epoch}")
            stop = self._report_epoch(epoch, metrics, result) or stop
        if self.keep_best and best_state is not None:  # the best epoch, not the last
            state.load_state_dict(best_state)
        return self._finish(result, progress, started)

    def _begin(self, result: StageResult, state, optimizer, scheduler, resume: bool) -> Progress:
        """The progress to continue from: a resumed stage's (state, optimiser and schedule restored), else none."""
        progress = self.checkpointer.load_progress() if resume else None
        if progress is not None:
            self.checkpointer.restore(state, optimizer, scheduler)
            result.resumed_after_epoch = progress.epoch
            self._report_unreported(progress)
        else:
            progress = Progress(stage=self.stage)
        if progress.train_rows is None:  # a checkpoint from before rows were counted: whole epochs
            progress.train_rows = self.train_examples * progress.epoch
        return progress

    def _train_and_validate(
        self, epoch: int, result: StageResult, progress: Progress, train_epoch, validate, scheduler
    ):
        """One epoch trained and validated: its metrics, appended to the history."""
        self.reporter.start(self.stage, self.batches_per_epoch, epoch, self.epochs)
        epoch_started = time.perf_counter()
        outcome = train_epoch(epoch)
        epoch_seconds = time.perf_counter() - epoch_started
        result.extra.setdefault("epoch_seconds", []).append(epoch_seconds)  # this process's epochs
        # an epoch that can be cut short at the deadline says how many rows it trained
        loss, rows = outcome if isinstance(outcome, tuple) else (outcome, self.train_examples)
        progress.train_seconds += epoch_seconds
        progress.train_rows += rows
        metrics = {"train_loss": loss, **{f"val_{k}": v for k, v in validate().items()}}
        speed = rows / max(epoch_seconds, 1e-9)  # as StageResult.samples_per_second
        self.reporter.end({"train_loss": loss, self.metric: metrics[self.metric], "samples_per_second": speed})
        if scheduler is not None:
            metrics["learning_rate"] = scheduler.get_last_lr()[-1]
        progress.history.append({"epoch": epoch, **metrics})
        return metrics

    def _stops_after(self, epoch: int, result: StageResult, progress: Progress) -> bool:
        """Early stopping's patience run out, or the time budget spent."""
        stop = bool(self.patience) and progress.epochs_without_improvement >= self.patience
        result.stopped_early = stop and epoch < self.epochs
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            stop, result.extra["time_budget_reached"] = True, True
        return stop

    def _report_epoch(self, epoch: int, metrics: dict, result: StageResult) -> bool:
        """``on_epoch_end`` hears the committed epoch; True when it asks the stage to stop (``StopStage``)."""
        if self.on_epoch_end is None:
            return False
        stop = False
        try:
            self.on_epoch_end(self.stage, epoch, metrics)
        except StopStage as signal:
            stop, result.extra["stopped_by"] = True, str(signal)
        self.checkpointer.save_reported(epoch)
        return stop

    def _finish(self, result: StageResult, progress: Progress, started: float) -> StageResult:
        progress.done = True
        self.checkpointer.save_progress(progress)
        result.epochs_run = progress.epoch
        result.history = progress.history
        result.best_epoch, result.best_metric = progress.best_epoch, progress.best_metric
        result.train_seconds = progress.train_seconds
        result.wall_seconds = time.perf_counter() - started
        result.samples_per_second = progress.train_rows / max(progress.train_seconds, 1e-9)
        return result


@dataclass(frozen=True)
class StepSettings:
    """What every optimisation step of an epoch uses, the same each epoch."""

    task: str
    optimizer: torch.optim.Optimizer
    scheduler: object  # None: a constant rate
    batch_size: int
    max_grad_norm: float
    runtime: object = None  # device and autocast (``network_epoch``)
    class_weights: torch.Tensor | None = None
    progress: ProgressReporter = SILENT


def head_epoch(model, head, features: torch.Tensor, targets: torch.Tensor, rng, settings: StepSettings):
    """One epoch of the head alone on cached backbone features."""
    model.train()
    model.base_model.eval()
    optimizer, batches = settings.optimizer, head_batches(len(features), settings.batch_size)
    parameters = [p for g in optimizer.param_groups for p in g["params"]]
    total, seen = 0.0, 0
    for batch in np.array_split(rng.permutation(len(features)), batches):
        loss = compute_loss(head(model, features[batch]), targets[batch], settings.task, settings.class_weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        optimizer.step()
        settings.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        total += value * len(batch)
        seen += len(batch)
        settings.progress.advance(1, len(batch), value)
    return total / max(seen, 1)


class EpochOutcome(NamedTuple):
    """What ``network_epoch`` returns: the mean training loss and how many rows it trained on
    (fewer than the split when the time budget cut the epoch short)."""

    loss: float
    rows: int


def network_epoch(
    model,
    spec,
    encoded: Encoded,
    targets,
    rng,
    settings: StepSettings,
    *,
    frozen_backbone=False,
    deadline: float | None = None,
    dist=None,
    inputs_of: Callable[[np.ndarray], dict[str, torch.Tensor]] | None = None,
    on_outputs: Callable[[np.ndarray, torch.Tensor], None] | None = None,
):
    """One epoch of the network on length-grouped, dynamically padded batches (cut short at
    ``deadline``, a time.perf_counter() value). ``inputs_of(rows)``: the model inputs of those
    rows of ``encoded`` (default: its collated token ids; the partial-freeze stage passes cached
    lower-block states). ``dist``: this rank's DDP-wrapped network
    (training.distributed.DataParallel); it trains on its share of each global batch, DDP
    all-reduces gradients during backward; the returned loss is the mean over every rank's rows.
    ``settings.progress`` hears each global batch (this rank's loss: reporting adds no sync between ranks);
    ``on_outputs(rows, outputs)`` each batch's outputs for this rank's rows (training.margins)."""
    model.train()
    if frozen_backbone:  # a frozen backbone is a fixed feature extractor: no dropout inside it
        model.base_model.eval()
    runtime, optimizer = settings.runtime, settings.optimizer
    parameters = [p for g in optimizer.param_groups for p in g["params"]]
    total, seen = 0.0, 0
    for whole in length_grouped_batches(encoded.lengths, settings.batch_size, rng):
        batch = whole if dist is None else dist.shard(whole)
        # every rank joins each step's gradient all-reduce: one without rows runs a row weighted 0
        rows = batch if len(batch) else whole[:1]
        inputs = {k: v.to(runtime.device) for k, v in (inputs_of or partial(collate, encoded))(rows).items()}
        with runtime.autocast():
            outputs = forward_logits(model, spec, inputs) if dist is None else dist.forward(inputs)
        loss = compute_loss(outputs, targets[rows].to(runtime.device), settings.task, settings.class_weights)
        if on_outputs is not None and len(batch):
            on_outputs(batch, outputs)
        (loss if dist is None else loss * dist.loss_scale(len(batch), len(whole))).backward()
        torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], settings.max_grad_norm)
        optimizer.step()
        if settings.scheduler is not None:
            settings.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        value = None
        if len(batch):
            value = float(loss.detach())
            total += value * len(batch)
            seen += len(batch)
        settings.progress.advance(1, len(whole), value)
        if deadline is not None and time.perf_counter() >= deadline:
            break
    if dist is not None:
        total, seen = dist.sum_over_ranks(total, seen)
    return EpochOutcome(total / max(seen, 1), int(seen))
