"""Stage 1, frozen: a fresh head trained on the frozen backbone's features (computed once, and
cached), as a plain function over paths: it reads its inputs from disk and writes its output
directory, so the Prefect task wrapping it hands the next step a reference only.

Strategies: lp-ft (head on the frozen backbone, then everything), full (no frozen stage),
linear-probe (frozen stage only), lora (frozen stage, then adapters and head). Stage 2 is
training.unfrozen_stage; calibration, training.calibration_step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.model.backbone import load_for_task, load_tokenizer
from finetune_core.model.batching import BatchLimit, Encoded
from finetune_core.model.features import (
    DEFAULT_CACHE,
    FeatureSettings,
    cached_features,
    known_within,
    load_known_features,
)
from finetune_core.model.heads import HeadSpec, resolve_pooling
from finetune_core.model.inference import head_outputs
from finetune_core.serving.outputs import ModelMeta, text_column_fields
from finetune_core.training import cached_lower_blocks
from finetune_core.training.device import Runtime, eval_batches, runtime_for
from finetune_core.training.encoded_splits import score_network, score_split, spec_for
from finetune_core.training.freeze_policy import FreezePolicy
from finetune_core.training.head_solver import (
    LBFGS_MAX_ITERATIONS,
    choose_solver,
    lbfgs_head_epoch,
    lbfgs_optimizer,
    penalty_scale,
)
from finetune_core.training.loop import (
    EpochLoop,
    ParameterSubset,
    StageResult,
    epoch_rng,
    finished_stage,
    head_batches,
    head_epoch,
    network_batches,
    network_epoch,
    seed_everything,
)
from finetune_core.training.optim import NO_DECAY, make_optimizer, make_scheduler
from finetune_core.training.recipe import head_rows
from finetune_core.training.stage_setup import StageData, StageInputs, save_stage, stage_loop

__all__ = ["StageInputs", "train_frozen"]


def _head_optimizer(model, config: FinetuneConfig, steps: int):
    head = [(n, p) for n, p in model.named_parameters() if not n.startswith(model.base_model_prefix + ".")]
    groups = [  # the same no-decay rule as the unfrozen stage's groups
        {"params": [p for n, p in head if not n.endswith(NO_DECAY)], "weight_decay": config.training.weight_decay},
        {"params": [p for n, p in head if n.endswith(NO_DECAY)], "weight_decay": 0.0},
    ]
    optimizer = make_optimizer(groups, config.training.frozen.learning_rate)
    return optimizer, make_scheduler(optimizer, "linear", 0, max(steps, 1)), {n for n, _ in head}


def _lbfgs_head(model, head_names: set[str], epochs: int):
    """The frozen stage's L-BFGS optimiser over the head, and a constant schedule for the loop."""
    parameters = [p for n, p in model.named_parameters() if n in head_names]
    optimizer = lbfgs_optimizer(parameters, max(1, LBFGS_MAX_ITERATIONS // max(epochs, 1)))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def train_frozen(inputs: StageInputs, *, known_features: Path | None = None) -> StageResult:
    """Stage 1: a fresh head on the backbone ``inputs.start``, trained on cached frozen-backbone
    features (``known_features``: the train rows backbone selection already extracted)."""
    if (done := finished_stage(inputs.out_dir, inputs.resume)) is not None:
        return done
    run = FrozenRun.start(inputs)
    if run.spec is not None and run.epochs > 0:  # train the head on backbone outputs computed once
        run.extract_features(known_features)
        train_epoch, validate = run.train_head_epoch, run.validate_head
    else:  # unknown model family: full forward passes with the backbone frozen
        run.loop.batches_per_epoch = network_batches(len(run.data.train), inputs.config.training.batch_size)
        train_epoch, validate = run.train_network_epoch, run.validate_network
    state = ParameterSubset(run.model, run.head_names)
    result = run.loop.run(state, train_epoch, validate, run.optimizer, run.scheduler, resume=inputs.resume)
    return run.finish(result)


@dataclass
class FrozenRun:
    """Stage 1 set up: the model with its backbone frozen, the head's optimiser, the epoch loop, and
    (once extracted) the train and validation features the head trains and is scored on."""

    inputs: StageInputs
    runtime: Runtime
    inference: BatchLimit  # validation, features and the layer cache
    tokenizer: object
    model: object
    pooling: str
    spec: HeadSpec | None
    epochs: int
    data: StageData  # train: the head's rows (a sample under a time budget)
    every_train_row: Encoded  # the layer cache's rows: stage 2 trains on all of them
    sample: np.ndarray | None
    freeze: int  # blocks stage 2 keeps frozen from its start: their layer cache is filled here
    optimizer: object
    scheduler: object
    head_names: set[str]
    loop: EpochLoop
    extra: dict = field(default_factory=dict)
    features: tuple | None = None  # (train, validation) features on the device
    solver: str = "adamw"
    lbfgs: tuple | None = None  # (weight names, penalty scale) of the L-BFGS head

    @classmethod
    def start(cls, inputs: StageInputs) -> FrozenRun:
        config, prepared, backbone = inputs.config, inputs.prepared, str(inputs.start)
        training, trust = config.training, config.backbone.trust_remote_code
        runtime = runtime_for(training, backbone, trust)
        inference = eval_batches(training, runtime)
        seed_everything(training.seed)  # the head's initialisation depends on it
        tokenizer = load_tokenizer(backbone, trust)
        model = load_for_task(backbone, prepared.task, prepared.labels, trust).to(runtime.device)
        pooling = resolve_pooling(config.backbone.pooling, backbone, pairs=prepared.pairs)
        spec = spec_for(model, pooling)
        epochs = 0 if training.strategy == "full" else training.frozen.epochs
        for parameter in model.base_model.parameters():
            parameter.requires_grad_(False)
        data, extra = StageData.read(inputs, tokenizer), {}
        stage2 = FreezePolicy.from_config(config, model)  # a bad stage-2 setting fails before any training
        stage2_freeze = stage2.frozen_from_start if stage2.runs else None
        every_train_row = data.train
        if (sample := head_rows(training, prepared, data.train_labels, stage2_freeze)) is not None:
            data = data.sampled(inputs, sample)
            extra["head_rows"] = len(sample)
        steps = epochs * -(-len(data.train) // training.batch_size)
        optimizer, scheduler, head_names = _head_optimizer(model, config, steps)
        loop = stage_loop(inputs, "frozen", epochs, train_rows=len(data.train))
        args = (tokenizer, model, pooling, spec, epochs, data, every_train_row, sample, stage2_freeze or 0)
        return cls(inputs, runtime, inference, *args, optimizer, scheduler, head_names, loop, extra)

    def extract_features(self, known_features: Path | None) -> None:
        """The head's train and validation features, computed once (or read from the feature cache),
        filling stage 2's layer cache on the way; then the head's solver."""
        training, infer = self.inputs.config.training, self.runtime.for_inference()
        writers = self._layer_cache_writers(infer.precision)
        started = time.perf_counter()
        cache_dir = (training.cache_dir or DEFAULT_CACHE) if training.feature_cache else None
        settings = FeatureSettings(
            training.max_length,
            self.inference,
            self.runtime.device,
            infer.autocast,
            infer.precision,
            self.pooling,
            cache_dir,
        )
        known = load_known_features(known_features, self.pooling, infer.precision, training.max_length)
        known = known if self.sample is None else known_within(known, self.sample)
        with cached_lower_blocks.filling(self.model, self.freeze, writers.get("train"), self.sample) as tap:
            train_x, train_hit = self._features(self.data.train, settings, "train features", tap, known)
        with cached_lower_blocks.filling(self.model, self.freeze, writers.get("validation")) as tap:
            val_x, val_hit = self._features(self.data.validation, settings, "validation features", tap)
        progress = self.inputs.progress
        cached_lower_blocks.finish_writers(writers, self.model, self.freeze, self.runtime, self.inference, progress)
        self.features = (train_x.to(self.runtime.device), val_x.to(self.runtime.device))
        seconds = time.perf_counter() - started
        self.extra.update(feature_seconds=seconds, feature_cache_hits=int(train_hit) + int(val_hit))
        if writers:
            self.extra["layer_caches_written"] = len(writers)
        self._choose_solver()

    def _features(self, encoded: Encoded, settings: FeatureSettings, task: str, tap, known=None):
        backbone, progress = str(self.inputs.start), self.inputs.progress
        return cached_features(
            self.model, self.spec, encoded, backbone, settings, known=known, progress=progress, task=task, tap=tap
        )

    def _layer_cache_writers(self, precision: str) -> dict:
        """Stage 2's layer cache, filled by the features pass (when stage 2 freezes blocks from its start)."""
        if not self.freeze:
            return {}
        training = self.inputs.config.training
        splits = {"train": self.every_train_row, "validation": self.data.validation}
        directory = cached_lower_blocks.layer_cache_dir(training, self.inputs.out_dir)
        backbone = str(self.inputs.start)
        paths = cached_lower_blocks.cache_paths(
            directory, backbone, splits, training.max_length, precision, self.freeze
        )
        return cached_lower_blocks.writers_for(self.model, splits, paths)

    def _choose_solver(self) -> None:
        training, train_x = self.inputs.config.training, self.features[0]
        self.loop.batches_per_epoch = head_batches(len(train_x), training.batch_size)
        self.solver = choose_solver(training.frozen.solver, self.epochs, self.loop.batches_per_epoch)
        self.extra["head_solver"] = self.solver
        if self.solver == "lbfgs":  # full batch: one step per epoch, continuing the solver's state
            self.optimizer, self.scheduler = _lbfgs_head(self.model, self.head_names, self.epochs)
            self.loop.batches_per_epoch = 1
            weight_names = {n for n in self.head_names if not n.endswith(NO_DECAY)}
            prepared = self.inputs.prepared
            outputs = len(prepared.labels or [None])
            scale = penalty_scale(train_x, training.frozen.regularization, prepared.task, outputs)
            self.lbfgs = (weight_names, scale)

    def train_head_epoch(self, epoch: int) -> float:
        train_x, train_y = self.features[0], self.data.train_targets.to(self.runtime.device)
        if self.solver == "lbfgs":
            args = (train_x, train_y, self.inputs.prepared.task, self.optimizer, *self.lbfgs)
            loss = lbfgs_head_epoch(self.model, self.spec.head, *args, class_weights=self.data.class_weights)
            self.inputs.progress.advance(1, len(train_x), loss)
            return loss
        rng = epoch_rng(self.inputs.config.training.seed, "frozen", epoch)
        settings = self.data.step_settings(self.inputs, self.optimizer, self.scheduler)
        return head_epoch(self.model, self.spec.head, train_x, train_y, rng, settings)

    @torch.inference_mode()
    def validate_head(self) -> dict:
        self.model.eval()
        outputs = head_outputs(
            self.model, self.spec.head, self.features[1], self.inputs.config.training.eval_batch_size
        )
        return score_split(self.inputs.prepared, outputs, self.data.validation_targets)

    def train_network_epoch(self, epoch: int):
        rng = epoch_rng(self.inputs.config.training.seed, "frozen", epoch)
        settings = self.data.step_settings(self.inputs, self.optimizer, self.scheduler, self.runtime)
        train_y = self.data.train_targets.to(self.runtime.device)
        return network_epoch(self.model, self.spec, self.data.train, train_y, rng, settings, frozen_backbone=True)

    def validate_network(self) -> dict:
        validation = (self.data.validation, self.data.validation_targets)
        return score_network(self.inputs.prepared, self.model, validation, self.inference, self.runtime, self.spec)

    def finish(self, result: StageResult) -> StageResult:
        """The stage's record, and the model (every parameter trainable again) saved with its metadata."""
        inputs, prepared, training = self.inputs, self.inputs.prepared, self.inputs.config.training
        result.extra.update(self.extra, **self.runtime.record(), device=str(self.runtime.device), pooling=self.pooling)
        result.wall_seconds += self.extra.get("feature_seconds", 0.0)  # extraction is part of the stage's cost
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)
        meta = ModelMeta(
            task=prepared.task,
            **text_column_fields(prepared.text_columns.values()),
            max_length=training.max_length,
            labels=prepared.labels,
            target_mean=prepared.target_mean,
            target_std=prepared.target_std,
            backbone=str(inputs.start),
            pooling=self.pooling,
        )
        return save_stage(self.model.cpu(), self.tokenizer, meta, inputs.out_dir, result)
