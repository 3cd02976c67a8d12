"""Stage 2, unfrozen: from the stage-1 model, fine-tune the encoder with layer-wise learning rates
(or LoRA adapters), optionally over only the blocks above ``freeze_layers`` (their inputs come
from the layer cache), on one process or data-parallel over several."""

from __future__ import annotations

from pathlib import Path

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.prepare import PreparedData
from finetune_core.errors import ConfigError
from finetune_core.model import embedding_rows
from finetune_core.model.dropout_masks import STAGE_MASKS, choose_masks
from finetune_core.model.embedding_and_dropout import freeze_word_embeddings, set_dropout
from finetune_core.model.encoder_split import freeze_lower, resolve_freeze_layers
from finetune_core.model.heads import num_layers
from finetune_core.progress import SILENT, ProgressReporter
from finetune_core.serving.predictor import load_model_dir
from finetune_core.training import cached_lower_blocks, distributed, ray_launcher
from finetune_core.training.device import eval_batches, runtime_for
from finetune_core.training.distributed import DistContext
from finetune_core.training.encoded_splits import score_network, score_split, spec_for, split_tokens
from finetune_core.training.loop import (
    EpochCallback,
    StageResult,
    epoch_rng,
    finished_stage,
    network_batches,
    network_epoch,
    seed_everything,
)
from finetune_core.training.losses import targets_tensor
from finetune_core.training.optim import (
    BudgetSchedule,
    apply_trainable_depths,
    depth_of_parameters,
    landing_scheduler,
    layerwise_groups,
    make_optimizer,
    make_scheduler,
    unfrozen_depths,
)
from finetune_core.training.stage_setup import save_stage, stage_class_weights, stage_loop


def wrap_lora(model, config: FinetuneConfig, freeze: int = 0):
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
    runtime = runtime_for(training, checkpoint)
    inference = eval_batches(training, runtime)  # validation batches
    seed_everything(training.seed + 1)
    model, tokenizer, meta = load_model_dir(checkpoint)
    epochs = 0 if training.strategy == "linear-probe" else stage.epochs
    train, validation = (split_tokens(prepared, s, tokenizer, training.max_length) for s in ("train", "validation"))
    train_y, task = targets_tensor(train[1], prepared.task), prepared.task
    weights = stage_class_weights(config, prepared, train[1])
    spec = spec_for(model, meta.pooling)
    freeze = resolve_freeze_layers(stage.freeze_layers, model) if epochs > 0 else 0
    # freeze_after_epochs: the lowest blocks train with the rest at first, and freeze later (switch_to_upper)
    delay = stage.freeze_after_epochs if freeze else 0
    if delay >= epochs:  # they never freeze: every block trains throughout, as with freeze_layers 0
        freeze = delay = 0
    if delay and stage.gradual:
        raise ConfigError("training.unfrozen.freeze_after_epochs: not with gradual unfreezing (gradual: true)")
    frozen_from_start = 0 if delay else freeze
    frozen_names = freeze_lower(model, frozen_from_start)  # embeddings and the lowest blocks: in no group
    if stage.freeze_word_embeddings and epochs > 0:
        frozen_names |= freeze_word_embeddings(model)
    if stage.dropout is not None:
        set_dropout(model, stage.dropout)
    dropout_masks = choose_masks(model, STAGE_MASKS["unfrozen"], runtime.device)  # on CPU NumPy's are ~5x cheaper
    seen_rows = None  # a trained token matrix: only the rows train uses are in the optimizer
    if epochs > 0 and training.strategy != "lora" and embedding_rows.SEEN_ROWS_ONLY:
        seen_rows = embedding_rows.use_seen_rows(model, train[0].input_ids)
    if training.strategy == "lora" and epochs > 0:
        model = wrap_lora(model, config, frozen_from_start)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": training.weight_decay}]
    else:
        groups = layerwise_groups(model, spec, stage.learning_rate, stage.layer_lr_decay, training.weight_decay)
        groups = cached_lower_blocks.without_parameters(groups, frozen_names)
    model.to(runtime.device)
    optimizer = make_optimizer(groups, stage.learning_rate)
    embedding_rows.attach(seen_rows, optimizer)
    per_epoch = -(-len(train[0]) // training.batch_size)
    steps = epochs * per_epoch
    warmup = int(stage.warmup_ratio * steps)
    if stage.max_minutes:  # decay over the budget, not over epochs the budget would cut short
        scheduler = BudgetSchedule(optimizer, stage.scheduler, stage.warmup_ratio, steps, stage.max_minutes * 60)
    elif delay:  # blocks that freeze after `delay` epochs finish their own schedule by then
        # depth 0: embeddings, block i: depth i + 1; LoRA's one group of adapters keeps the shared schedule
        landing = ["depth" in g and g["depth"] <= freeze for g in groups]
        scheduler = landing_scheduler(optimizer, stage.scheduler, warmup, max(steps, 1), delay * per_epoch, landing)
    else:
        scheduler = make_scheduler(optimizer, stage.scheduler, warmup, max(steps, 1))
    depths, top = depth_of_parameters(model, spec), num_layers(model) + 1

    loop = stage_loop(
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
    splits, part = {"train": train[0], "validation": validation[0]}, None

    def switch_to_upper(trained: bool):
        """From here on, the blocks below `freeze` run once, into the layer cache; each step runs the rest."""
        nonlocal part, parallel
        freeze_lower(network, freeze)  # no gradient: the optimizer skips them from the next step
        args = (network, spec, meta, freeze, splits, checkpoint, runtime, training, ddp, progress)
        part = cached_lower_blocks.stage_part(*args, trained=trained)
        parallel = ddp.parallel(network, part.spec) if ddp is not None else None

    parallel = None
    if freeze and not delay:
        switch_to_upper(trained=False)
    elif ddp is not None and epochs > 0:  # rebuilt at a later switch (the old wrapper's hooks go with it)
        parallel = ddp.parallel(network, spec)
    if ddp is not None and not ddp.is_main:  # resumes from rank 0's checkpoints, never writes them
        loop.checkpointer = distributed.ReadOnlyCheckpointer(loop.checkpointer.directory)

    def train_epoch(epoch):
        if freeze and part is None and epoch > delay:  # also on a resume past the switch
            switch_to_upper(trained=True)
        if stage.gradual:
            if freeze:
                trainable = cached_lower_blocks.gradual_depths(epoch, epochs, top, freeze)
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
            inputs_of=cached_lower_blocks.cached_inputs(part.train) if part is not None else None,
        )

    def validate():
        if part is not None:
            outputs = cached_lower_blocks.upper_outputs(network, part.spec, part.validation, inference, runtime)
            return score_split(prepared, outputs, validation[1])
        return score_network(prepared, network, validation, inference, runtime, spec)

    result = loop.run(model, train_epoch, validate, optimizer, scheduler, resume=resume)
    if part is not None and delay:  # keyed by weights only this run had: no later run can hit it
        cached_lower_blocks.discard(part, ddp)
    result.extra.update(embedding_rows.fold_back(model, seen_rows))
    result.extra.update(**runtime.record(), device=str(runtime.device), strategy=training.strategy)
    result.extra["dropout_masks"] = dropout_masks
    if part is not None:
        result.extra.update(part.extra, freeze_after_epochs=delay)
    if training.strategy == "lora" and epochs > 0:
        model = model.merge_and_unload()  # a plain model: loads without peft, serves at full speed
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if ddp is not None:
        result.extra["num_processes"] = ddp.world
        if not ddp.is_main:
            return result
    return save_stage(model.cpu(), tokenizer, meta, out_dir, result)
