"""Pipeline steps as plain functions over paths: each reads its inputs from disk and writes
its output directory, so the Prefect tasks wrapping them hand each other references only.

Strategies: lp-ft (head on the frozen backbone, then everything), full (no frozen stage),
linear-probe (frozen stage only), lora (frozen stage, then adapters and head).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.multilabel import label_matrix, pos_weight_vector
from finetune_core.data.prepare import PreparedData, read_labels
from finetune_core.errors import ConfigError
from finetune_core.evaluation.metric_table import primary_metric
from finetune_core.evaluation.metrics import score_outputs
from finetune_core.evaluation.multilabel import fit_decision_rule
from finetune_core.model import embedding_rows
from finetune_core.model.adjust import freeze_word_embeddings, set_dropout
from finetune_core.model.backbone import load_for_task, load_tokenizer
from finetune_core.model.features import DEFAULT_CACHE, cached_features, load_known_features
from finetune_core.model.heads import num_layers, resolve_pooling
from finetune_core.model.inference import head_outputs, predict_outputs
from finetune_core.model.partial import freeze_lower, resolve_freeze_layers
from finetune_core.serving.predictor import ModelMeta, load_model_dir, save_model_dir, write_meta
from finetune_core.training import distributed, ray_launcher, upper
from finetune_core.training.calibration import expected_calibration_error, fit_temperature
from finetune_core.training.checkpoint import Checkpointer
from finetune_core.training.device import runtime_for
from finetune_core.training.distributed import DistContext
from finetune_core.training.head_solver import (
    LBFGS_MAX_ITERATIONS,
    choose_solver,
    lbfgs_head_epoch,
    lbfgs_optimizer,
    penalty_scale,
)
from finetune_core.training.loop import (
    EpochCallback,
    EpochLoop,
    ParameterSubset,
    StageResult,
    class_weight_vector,
    epoch_rng,
    finished_stage,
    head_batches,
    head_epoch,
    mark_finished,
    network_batches,
    network_epoch,
    seed_everything,
    targets_tensor,
)
from finetune_core.training.optim import (
    NO_DECAY,
    BudgetSchedule,
    apply_trainable_depths,
    depth_of_parameters,
    layerwise_groups,
    make_optimizer,
    make_scheduler,
    unfrozen_depths,
)
from finetune_core.training.progress import SILENT, ProgressReporter
from finetune_core.training.splits import outputs_for, spec_for, split_tokens


def _score(prepared: PreparedData, outputs: np.ndarray, targets: np.ndarray) -> dict:
    if prepared.task == "regression":
        targets = targets * prepared.target_std + prepared.target_mean
    return score_outputs(prepared.task, outputs, targets, prepared.labels, prepared.target_mean, prepared.target_std)


def _loop(config, prepared, stage, epochs, checkpoints, on_epoch_end, max_seconds=None, progress=SILENT) -> EpochLoop:
    metric, larger = primary_metric(prepared.task, config.training.metric)
    return EpochLoop(
        stage=stage,
        epochs=epochs,
        train_examples=prepared.rows["train"],
        metric=f"val_{metric}",
        larger_is_better=larger,
        patience=config.training.early_stopping_patience,
        keep_best=config.training.keep_best,
        checkpointer=Checkpointer(Path(checkpoints) / stage if checkpoints else None),
        on_epoch_end=on_epoch_end,
        max_seconds=max_seconds,
        reporter=progress,
    )


def _class_weights(config: FinetuneConfig, prepared: PreparedData, train_labels: np.ndarray):
    if prepared.task == "multilabel":  # positive weights of the binary cross-entropy, one per label
        # Unset: balanced. On Reuters (85 topics, many with a handful of rows) it raised test macro-F1 from
        # 0.421 to 0.472 (bench/tasks.py), at the cost of more false positives (micro-F1 0.463 -> 0.421).
        setting = config.training.pos_weight if config.training.pos_weight is not None else "balanced"
        weights = pos_weight_vector(setting, prepared.labels, train_labels)
        return None if weights is None else torch.tensor(weights, dtype=torch.float32)
    if prepared.task != "classification":
        return None
    return class_weight_vector(config.training.class_weights, prepared.labels, train_labels)


def _save(model, tokenizer, meta, out_dir: Path, result: StageResult) -> StageResult:
    save_model_dir(model, tokenizer, meta, out_dir)
    return mark_finished(out_dir, result)


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


def _stage2_freeze(config: FinetuneConfig, model) -> int:
    """Blocks stage 2 keeps frozen (``training.unfrozen.freeze_layers`` resolved; 0 when stage 2
    will not run): checked in stage 1 too, so a bad value fails before any training."""
    training = config.training
    if training.strategy == "linear-probe" or training.unfrozen.epochs == 0:
        return 0
    return resolve_freeze_layers(training.unfrozen.freeze_layers, model)


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
    runtime = runtime_for(training)
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
    steps = epochs * -(-len(train[0]) // training.batch_size)
    optimizer, scheduler, head_names = _head_optimizer(model, config, steps)
    loop = _loop(config, prepared, "frozen", epochs, checkpoints, on_epoch_end, progress=progress)
    train_y, task, extra = targets_tensor(train[1], prepared.task).to(runtime.device), prepared.task, {}
    weights = _class_weights(config, prepared, train[1])
    freeze, writers = _stage2_freeze(config, model), {}
    if freeze and spec is not None and epochs > 0:  # stage 2's layer cache, filled by the features pass
        splits = {"train": train[0], "validation": validation[0]}
        directory = upper.layer_cache_dir(training, out_dir)
        paths = upper.cache_paths(directory, backbone, splits, training.max_length, runtime.precision, freeze)
        writers = upper.writers_for(model, splits, paths)

    if spec is not None and epochs > 0:  # train the head on backbone outputs computed once
        started = time.perf_counter()
        cache_dir = (training.cache_dir or DEFAULT_CACHE) if training.feature_cache else None
        common = dict(
            max_length=training.max_length,
            batch_size=training.eval_batch_size,
            device=runtime.device,
            autocast=runtime.autocast,
            precision=runtime.precision,
            pooling=pooling,
            cache_dir=cache_dir,
        )
        known = load_known_features(known_features, pooling, runtime.precision, training.max_length)
        with upper.filling(model, freeze, writers.get("train")) as tap:
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
        with upper.filling(model, freeze, writers.get("validation")) as tap:
            val_x, val_hit = cached_features(
                model, spec, validation[0], backbone, progress=progress, task="validation features", tap=tap, **common
            )
        upper.finish_writers(writers, model, freeze, runtime, training.eval_batch_size, progress)
        train_x, val_x = train_x.to(runtime.device), val_x.to(runtime.device)
        extra = {"feature_seconds": time.perf_counter() - started, "feature_cache_hits": int(train_hit) + int(val_hit)}
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
            return _score(prepared, head_outputs(model, spec.head, val_x, training.eval_batch_size), validation[1])
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
            outputs = predict_outputs(
                model, validation[0], training.eval_batch_size, runtime.device, runtime.autocast, spec
            )
            return _score(prepared, outputs, validation[1])

    result = loop.run(ParameterSubset(model, head_names), train_epoch, validate, optimizer, scheduler, resume=resume)
    result.extra.update(extra, precision=runtime.precision, device=str(runtime.device), pooling=pooling)
    result.wall_seconds += extra.get("feature_seconds", 0.0)  # extraction is part of the stage's cost
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return _save(model.cpu(), tokenizer, meta, out_dir, result)


def _wrap_lora(model, config: FinetuneConfig, freeze: int = 0):
    from peft import LoraConfig, TaskType, get_peft_model

    lora = config.training.lora
    # with frozen lower blocks, adapters only above them (the cached lower outputs stay valid)
    above = {"layers_to_transform": list(range(freeze, num_layers(model))), "layers_pattern": "layer"}
    if freeze and not above["layers_to_transform"]:
        raise ConfigError("training.unfrozen.freeze_layers: every block is frozen, so strategy lora has no adapters")
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        **(above if freeze else {}),
    )
    return get_peft_model(model, peft_config)


def train_unfrozen(
    config: FinetuneConfig,
    prepared: PreparedData,
    checkpoint: Path,
    out_dir: Path,
    on_epoch_end: EpochCallback | None = None,
    checkpoints: Path | None = None,
    resume: bool = False,
    progress: ProgressReporter = SILENT,
    ddp: DistContext | None = None,
) -> StageResult:
    """Stage 2: from the stage-1 model, fine-tune with layer-wise learning rates (or LoRA);
    data-parallel (DDP) over `training.num_processes` processes per node: the launcher
    `training.launcher` (training.distributed, training.ray_launcher) runs this function again in each worker with its
    rank context as ``ddp``."""
    if (done := finished_stage(out_dir, resume)) is not None:
        return done
    if ddp is None and distributed.needs_launch(config.training) and config.training.unfrozen.epochs > 0:
        stage_args = dict(
            config=config,
            prepared=prepared,
            checkpoint=checkpoint,
            out_dir=out_dir,
            on_epoch_end=on_epoch_end,
            checkpoints=checkpoints,
            resume=resume,
        )
        launcher = ray_launcher if config.training.launcher == "ray" else distributed
        launcher.launch(config.training, train_unfrozen, stage_args, out_dir, progress)
        return finished_stage(out_dir, resume=True)  # what rank 0 saved
    if ddp is not None and not ddp.is_main:  # rank 0 alone writes checkpoints and reports
        on_epoch_end, progress = None, SILENT
    training, stage = config.training, config.training.unfrozen
    runtime = runtime_for(training)
    seed_everything(training.seed + 1)
    model, tokenizer, meta = load_model_dir(checkpoint)
    epochs = 0 if training.strategy == "linear-probe" else stage.epochs
    train, validation = (split_tokens(prepared, s, tokenizer, training.max_length) for s in ("train", "validation"))
    train_y, task = targets_tensor(train[1], prepared.task), prepared.task
    weights = _class_weights(config, prepared, train[1])
    spec = spec_for(model, meta.pooling)
    freeze = resolve_freeze_layers(stage.freeze_layers, model) if epochs > 0 else 0
    frozen_names = freeze_lower(model, freeze)  # embeddings and the lowest blocks: in no group
    if stage.freeze_word_embeddings and epochs > 0:
        frozen_names |= freeze_word_embeddings(model)
    if stage.dropout is not None:
        set_dropout(model, stage.dropout)
    seen_rows = None  # a trained token matrix: only the rows train uses are in the optimizer
    if epochs > 0 and training.strategy != "lora" and training.token_rows == "seen":
        seen_rows = embedding_rows.use_seen_rows(model, train[0].input_ids)
    if training.strategy == "lora" and epochs > 0:
        model = _wrap_lora(model, config, freeze)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": training.weight_decay}]
    else:
        groups = layerwise_groups(model, spec, stage.learning_rate, stage.layer_lr_decay, training.weight_decay)
        groups = upper.without_parameters(groups, frozen_names)
    model.to(runtime.device)
    optimizer = make_optimizer(groups, stage.learning_rate)
    embedding_rows.attach(seen_rows, optimizer)
    steps = epochs * -(-len(train[0]) // training.batch_size)
    if stage.max_minutes:  # decay over the budget, not over epochs the budget would cut short
        scheduler = BudgetSchedule(optimizer, stage.scheduler, stage.warmup_ratio, steps, stage.max_minutes * 60)
    else:
        scheduler = make_scheduler(optimizer, stage.scheduler, int(stage.warmup_ratio * steps), max(steps, 1))
    depths, top = depth_of_parameters(model, spec), num_layers(model) + 1

    loop = _loop(
        config,
        prepared,
        "unfrozen",
        epochs,
        checkpoints,
        on_epoch_end,
        max_seconds=stage.max_minutes * 60 if stage.max_minutes else None,
        progress=progress,
    )
    loop.batches_per_epoch = network_batches(len(train[0]), training.batch_size)
    # With LoRA the adapters sit inside the wrapped transformers model: run that one.
    network = model.get_base_model() if hasattr(model, "get_base_model") else model
    part = None
    if freeze:  # the blocks below `freeze` ran once, into the layer cache; each step runs the rest
        directory = upper.layer_cache_dir(training, checkpoint)
        splits = {"train": train[0], "validation": validation[0]}
        paths = upper.cache_paths(directory, meta.backbone, splits, training.max_length, runtime.precision, freeze)
        part = upper.open_caches(network, spec, meta.pooling, freeze, splits, paths, runtime, training, ddp, progress)
    parallel = ddp.parallel(network, part.spec if part else spec) if ddp is not None and epochs > 0 else None
    if ddp is not None and not ddp.is_main:  # resumes from rank 0's checkpoints, never writes them
        loop.checkpointer = distributed.ReadOnlyCheckpointer(loop.checkpointer.directory)

    def train_epoch(epoch):
        if stage.gradual:
            if freeze:
                trainable = upper.gradual_depths(epoch, epochs, top, freeze)
            else:
                trainable = unfrozen_depths(epoch, epochs, top)
            apply_trainable_depths(model, depths, trainable, frozen_names)
        rng = epoch_rng(training.seed, "unfrozen", epoch)
        # with frozen lower blocks the epoch runs on their cached states: only the upper part trains
        source, run_spec = (part.train, part.spec) if part is not None else (train[0], spec)
        return network_epoch(
            network,
            run_spec,
            source,
            train_y,
            task,
            optimizer,
            scheduler,
            training.batch_size,
            rng,
            training.max_grad_norm,
            runtime,
            deadline=loop.deadline,
            dist=parallel,
            progress=progress,
            class_weights=weights,
            inputs_of=upper.cached_inputs(part.train) if part is not None else None,
        )

    def validate():
        if part is not None:
            outputs = upper.upper_outputs(network, part.spec, part.validation, training.eval_batch_size, runtime)
            return _score(prepared, outputs, validation[1])
        outputs = predict_outputs(
            network, validation[0], training.eval_batch_size, runtime.device, runtime.autocast, spec
        )
        return _score(prepared, outputs, validation[1])

    result = loop.run(model, train_epoch, validate, optimizer, scheduler, resume=resume)
    embedding_rows.fold_back(model, seen_rows)
    result.extra.update(precision=runtime.precision, device=str(runtime.device), strategy=training.strategy)
    if seen_rows is not None:
        result.extra["trained_token_rows"] = len(seen_rows.seen)
    if part is not None:
        result.extra.update(part.extra)
    if training.strategy == "lora" and epochs > 0:
        model = model.merge_and_unload()  # a plain model: loads without peft, serves at full speed
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if ddp is not None:
        result.extra["num_processes"] = ddp.world
        if not ddp.is_main:
            return result
    return _save(model.cpu(), tokenizer, meta, out_dir, result)


def calibrate(config: FinetuneConfig, prepared: PreparedData, model_dir: Path) -> dict:
    """Fit temperature scaling on validation and store it with the model (classification); for
    multilabel, per-label temperatures and decision thresholds (tuned even when not calibrating)."""
    if prepared.task == "multilabel":
        outputs, targets, meta = outputs_for(config, prepared, model_dir, "validation")
        trained = label_matrix(read_labels(prepared.paths["train"]), len(prepared.labels)).sum(axis=0) > 0
        rule = fit_decision_rule(outputs, targets, prepared.labels, config.training.calibrate, trained)
        meta.thresholds = [float(t) for t in rule["thresholds"]]
        meta.temperatures = None if rule["temperatures"] is None else [float(t) for t in rule["temperatures"]]
        meta.calibration_notes = rule["notes"]
        write_meta(meta, model_dir)
        return rule["summary"]
    if prepared.task != "classification" or not config.training.calibrate:
        return {}
    outputs, targets, meta = outputs_for(config, prepared, model_dir, "validation")
    meta.temperature = fit_temperature(outputs, targets)
    write_meta(meta, model_dir)
    return {
        "temperature": meta.temperature,
        "val_ece_before": expected_calibration_error(outputs, targets),
        "val_ece_after": expected_calibration_error(outputs, targets, meta.temperature),
    }
