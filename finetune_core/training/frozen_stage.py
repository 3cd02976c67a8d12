"""Stage 1, frozen: a fresh head trained on the frozen backbone's features (computed once, and
cached), as a plain function over paths: it reads its inputs from disk and writes its output
directory, so the Prefect task wrapping it hands the next step a reference only.

Strategies: lp-ft (head on the frozen backbone, then everything), full (no frozen stage),
linear-probe (frozen stage only), lora (frozen stage, then adapters and head). Stage 2 is
training.unfrozen_stage; calibration, training.calibration_step.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.prepare import PreparedData
from finetune_core.model.backbone import load_for_task, load_tokenizer
from finetune_core.model.batching import take_encoded
from finetune_core.model.encoder_split import resolve_freeze_layers
from finetune_core.model.features import DEFAULT_CACHE, cached_features, known_within, load_known_features
from finetune_core.model.heads import resolve_pooling
from finetune_core.model.inference import head_outputs
from finetune_core.progress import SILENT, ProgressReporter
from finetune_core.serving.predictor import ModelMeta
from finetune_core.training import cached_lower_blocks
from finetune_core.training.device import eval_batches, runtime_for
from finetune_core.training.encoded_splits import score_network, score_split, spec_for, split_tokens
from finetune_core.training.head_solver import (
    LBFGS_MAX_ITERATIONS,
    choose_solver,
    lbfgs_head_epoch,
    lbfgs_optimizer,
    penalty_scale,
)
from finetune_core.training.loop import (
    EpochCallback,
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
from finetune_core.training.losses import targets_tensor
from finetune_core.training.optim import NO_DECAY, make_optimizer, make_scheduler
from finetune_core.training.recipe import head_rows
from finetune_core.training.stage_setup import save_stage, stage_class_weights, stage_loop

__all__ = ["train_frozen"]


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


def _stage2_freeze(config: FinetuneConfig, model) -> int | None:
    """Blocks stage 2 keeps frozen from its start (``training.unfrozen.freeze_layers`` resolved; 0
    when they train first, ``freeze_after_epochs``; None when stage 2 will not run): checked in
    stage 1 too, so a bad value fails before any training."""
    training = config.training
    if training.strategy == "linear-probe" or training.unfrozen.epochs == 0:
        return None
    frozen = resolve_freeze_layers(training.unfrozen.freeze_layers, model)
    return 0 if training.unfrozen.freeze_after_epochs else frozen


def train_frozen(
    config: FinetuneConfig,
    prepared: PreparedData,
    backbone: str,
    out_dir: Path,
    on_epoch_end: EpochCallback | None = None,
    checkpoints: Path | None = None,
    resume: bool = False,
    known_features: Path | None = None,
    progress: ProgressReporter = SILENT,
) -> StageResult:
    """Stage 1: a fresh head on ``backbone``, trained on cached frozen-backbone features
    (``known_features``: the train rows backbone selection already extracted)."""
    if (done := finished_stage(out_dir, resume)) is not None:
        return done
    training = config.training
    runtime = runtime_for(training, backbone, config.backbone.trust_remote_code)
    infer = runtime.for_inference()  # validation, features and the layer cache
    inference = eval_batches(training, runtime)
    seed_everything(training.seed)  # the head's initialisation depends on it
    tokenizer = load_tokenizer(backbone, config.backbone.trust_remote_code)
    model = load_for_task(backbone, prepared.task, prepared.labels, config.backbone.trust_remote_code).to(
        runtime.device
    )
    pooling = resolve_pooling(config.backbone.pooling, backbone, pairs=prepared.text_pair_column is not None)
    spec = spec_for(model, pooling)
    meta = ModelMeta(
        task=prepared.task,
        text_column=prepared.text_column,
        text_pair_column=prepared.text_pair_column,
        max_length=training.max_length,
        labels=prepared.labels,
        target_mean=prepared.target_mean,
        target_std=prepared.target_std,
        backbone=backbone,
        pooling=pooling,
    )
    epochs = 0 if training.strategy == "full" else training.frozen.epochs
    for parameter in model.base_model.parameters():
        parameter.requires_grad_(False)
    train, validation = (split_tokens(prepared, s, tokenizer, training.max_length) for s in ("train", "validation"))
    stage2_freeze, writers, extra = _stage2_freeze(config, model), {}, {}
    freeze = stage2_freeze or 0
    every_train_row = train[0]  # the layer cache's rows: stage 2 trains on all of them
    if (sample := head_rows(training, prepared, train[1], stage2_freeze)) is not None:
        train = (take_encoded(train[0], sample), train[1][sample])
        extra["head_rows"] = len(sample)
    steps = epochs * -(-len(train[0]) // training.batch_size)
    optimizer, scheduler, head_names = _head_optimizer(model, config, steps)
    loop = stage_loop(
        config, prepared, "frozen", epochs, checkpoints, on_epoch_end, progress=progress, train_rows=len(train[0])
    )
    train_y, task = targets_tensor(train[1], prepared.task).to(runtime.device), prepared.task
    weights = stage_class_weights(config, prepared, train[1])
    if freeze and spec is not None and epochs > 0:  # stage 2's layer cache, filled by the features pass
        splits = {"train": every_train_row, "validation": validation[0]}
        directory = cached_lower_blocks.layer_cache_dir(training, out_dir)
        paths = cached_lower_blocks.cache_paths(
            directory, backbone, splits, training.max_length, infer.precision, freeze
        )
        writers = cached_lower_blocks.writers_for(model, splits, paths)

    if spec is not None and epochs > 0:  # train the head on backbone outputs computed once
        started = time.perf_counter()
        cache_dir = (training.cache_dir or DEFAULT_CACHE) if training.feature_cache else None
        common = dict(
            max_length=training.max_length,
            batch_size=inference,
            device=runtime.device,
            autocast=infer.autocast,
            precision=infer.precision,
            pooling=pooling,
            cache_dir=cache_dir,
        )
        known = load_known_features(known_features, pooling, infer.precision, training.max_length)
        known = known if sample is None else known_within(known, sample)
        with cached_lower_blocks.filling(model, freeze, writers.get("train"), sample) as tap:
            train_x, train_hit = cached_features(
                model,
                spec,
                train[0],
                backbone,
                known=known,
                progress=progress,
                task="train features",
                tap=tap,
                **common,
            )
        with cached_lower_blocks.filling(model, freeze, writers.get("validation")) as tap:
            val_x, val_hit = cached_features(
                model, spec, validation[0], backbone, progress=progress, task="validation features", tap=tap, **common
            )
        cached_lower_blocks.finish_writers(writers, model, freeze, runtime, inference, progress)
        train_x, val_x = train_x.to(runtime.device), val_x.to(runtime.device)
        extra.update(feature_seconds=time.perf_counter() - started, feature_cache_hits=int(train_hit) + int(val_hit))
        if writers:
            extra["layer_caches_written"] = len(writers)
        loop.batches_per_epoch = head_batches(len(train_x), training.batch_size)
        solver = choose_solver(training.frozen.solver, epochs, loop.batches_per_epoch)
        extra["head_solver"] = solver
        if solver == "lbfgs":  # full batch: one step per epoch, continuing the solver's state
            optimizer, scheduler = _lbfgs_head(model, head_names, epochs)
            loop.batches_per_epoch = 1
            weight_names = {n for n in head_names if not n.endswith(NO_DECAY)}
            outputs = len(prepared.labels or [None])
            scale = penalty_scale(train_x, training.frozen.regularization, task, outputs)

        def train_epoch(epoch):
            if solver == "lbfgs":
                args = (train_x, train_y, task, optimizer, weight_names, scale)
                loss = lbfgs_head_epoch(model, spec.head, *args, class_weights=weights)
                progress.advance(1, len(train_x), loss)
                return loss
            rng = epoch_rng(training.seed, "frozen", epoch)
            return head_epoch(
                model,
                spec.head,
                train_x,
                train_y,
                task,
                optimizer,
                scheduler,
                training.batch_size,
                rng,
                training.max_grad_norm,
                progress,
                class_weights=weights,
            )

        @torch.inference_mode()
        def validate():
            model.eval()
            return score_split(prepared, head_outputs(model, spec.head, val_x, training.eval_batch_size), validation[1])
    else:  # unknown model family: full forward passes with the backbone frozen
        loop.batches_per_epoch = network_batches(len(train[0]), training.batch_size)

        def train_epoch(epoch):
            rng = epoch_rng(training.seed, "frozen", epoch)
            return network_epoch(
                model,
                spec,
                train[0],
                train_y,
                task,
                optimizer,
                scheduler,
                training.batch_size,
                rng,
                training.max_grad_norm,
                runtime,
                frozen_backbone=True,
                progress=progress,
                class_weights=weights,
            )

        def validate():
            return score_network(prepared, model, validation, inference, runtime, spec)

    result = loop.run(ParameterSubset(model, head_names), train_epoch, validate, optimizer, scheduler, resume=resume)
    result.extra.update(extra, **runtime.record(), device=str(runtime.device), pooling=pooling)
    result.wall_seconds += extra.get("feature_seconds", 0.0)  # extraction is part of the stage's cost
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return save_stage(model.cpu(), tokenizer, meta, out_dir, result)
