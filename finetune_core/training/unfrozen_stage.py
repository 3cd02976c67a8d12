"""Stage 2, unfrozen: from the stage-1 model, fine-tune the encoder with layer-wise learning rates
(or LoRA adapters), optionally over only the blocks above ``freeze_layers`` (their inputs come
from the layer cache), on one process or data-parallel over several."""

from __future__ import annotations

from dataclasses import dataclass, replace

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.errors import ConfigError
from finetune_core.model import embedding_rows
from finetune_core.model.batching import BatchLimit
from finetune_core.model.dropout_masks import STAGE_MASKS, choose_masks
from finetune_core.model.embedding_and_dropout import set_dropout
from finetune_core.model.heads import HeadSpec, num_layers
from finetune_core.progress import SILENT, ProgressReporter
from finetune_core.serving.outputs import ModelMeta
from finetune_core.serving.predictor import load_model_dir
from finetune_core.training import cached_lower_blocks, distributed, ray_launcher
from finetune_core.training.device import Runtime, eval_batches, runtime_for
from finetune_core.training.distributed import DistContext
from finetune_core.training.encoded_splits import score_network, score_split, spec_for
from finetune_core.training.freeze_policy import FreezePolicy
from finetune_core.training.loop import (
    EpochLoop,
    StageResult,
    epoch_rng,
    finished_stage,
    network_batches,
    network_epoch,
    seed_everything,
)
from finetune_core.training.margins import MarginRecorder
from finetune_core.training.optim import (
    BudgetSchedule,
    depth_of_parameters,
    landing_scheduler,
    layerwise_groups,
    make_optimizer,
    make_scheduler,
)
from finetune_core.training.stage_setup import StageData, StageInputs, save_stage, stage_loop

__all__ = ["StageInputs", "train_unfrozen"]


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


def train_unfrozen(inputs: StageInputs, *, ddp: DistContext | None = None) -> StageResult:
    """Stage 2: from the stage-1 model (``inputs.start``), fine-tune with layer-wise learning rates
    (or LoRA); data-parallel (DDP) over `training.num_processes` processes per node: the launcher
    `training.launcher` (training.distributed, training.ray_launcher) runs this stage again in each
    worker with its rank context as ``ddp``."""
    if (done := finished_stage(inputs.out_dir, inputs.resume)) is not None:
        return done
    training = inputs.config.training
    if ddp is None and distributed.needs_launch(training) and training.unfrozen.epochs > 0:
        launcher = ray_launcher if training.launcher == "ray" else distributed
        stage_args = {"inputs": replace(inputs, progress=SILENT)}  # each worker is given its own reporter
        launcher.launch(training, train_rank, stage_args, inputs.out_dir, inputs.progress)
        return finished_stage(inputs.out_dir, resume=True)  # what rank 0 saved
    if ddp is not None and not ddp.is_main:  # rank 0 alone writes checkpoints and reports
        inputs = replace(inputs, on_epoch_end=None, progress=SILENT)
    run = UnfrozenRun.start(inputs, ddp)
    result = run.loop.run(run.model, run.train_epoch, run.validate, run.optimizer, run.scheduler, resume=inputs.resume)
    return run.finish(result)


def train_rank(
    inputs: StageInputs, progress: ProgressReporter = SILENT, ddp: DistContext | None = None, resume: bool = False
):
    """One data-parallel worker's stage (what the launchers run, with the rank's reporter); a worker
    the launcher restarted passes ``resume=True`` and continues from the last epoch checkpoint."""
    return train_unfrozen(replace(inputs, progress=progress, resume=inputs.resume or resume), ddp=ddp)


@dataclass
class UnfrozenRun:
    """Stage 2 set up on one process: the model, its data, the freeze policy, the optimiser and the
    epoch loop; ``part`` is the upper part over the layer cache once the lower blocks are frozen."""

    inputs: StageInputs
    ddp: DistContext | None
    runtime: Runtime
    inference: BatchLimit  # validation batches
    model: object  # the trained model (a LoRA wrapper with strategy lora)
    tokenizer: object
    meta: ModelMeta
    spec: HeadSpec
    data: StageData
    policy: FreezePolicy
    seen_rows: object
    dropout_masks: str
    optimizer: object = None
    scheduler: object = None
    loop: EpochLoop = None
    part: cached_lower_blocks.UpperPart | None = None
    parallel: object = None  # this rank's DDP wrapper
    depths: dict[str, int] | None = None  # parameter name -> depth (0: embeddings, block i: i + 1)
    top: int = 0  # the head's depth
    margins: MarginRecorder | None = None  # each train row's margin per epoch: the label review's second reading

    @property
    def network(self):
        """With LoRA the adapters sit inside the wrapped transformers model: run that one."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @classmethod
    def start(cls, inputs: StageInputs, ddp: DistContext | None) -> UnfrozenRun:
        training = inputs.config.training
        runtime = runtime_for(training, inputs.start)
        inference = eval_batches(training, runtime)
        seed_everything(training.seed + 1)
        model, tokenizer, meta = load_model_dir(inputs.start)
        data = StageData.read(inputs, tokenizer)
        spec = spec_for(model, meta.pooling)
        policy = FreezePolicy.from_config(inputs.config, model)
        policy.freeze_before_training(model)  # embeddings and the lowest blocks: in no optimizer group
        if training.unfrozen.dropout is not None:
            set_dropout(model, training.unfrozen.dropout)
        masks = choose_masks(model, STAGE_MASKS["unfrozen"], runtime.device)  # on CPU NumPy's are ~5x cheaper
        seen_rows = None  # a trained token matrix: only the rows train uses are in the optimizer
        if policy.runs and training.strategy != "lora" and embedding_rows.SEEN_ROWS_ONLY:
            seen_rows = embedding_rows.use_seen_rows(model, data.train.input_ids)
        if training.strategy == "lora" and policy.runs:
            model = wrap_lora(model, inputs.config, policy.frozen_from_start)
        run = cls(inputs, ddp, runtime, inference, model, tokenizer, meta, spec, data, policy, seen_rows, masks)
        run._optimise()
        run._start_loop()
        if inputs.margins_file is not None and inputs.prepared.task == "classification" and policy.runs:
            run.margins = MarginRecorder.start(inputs.margins_file, policy.epochs, data.train_targets, inputs.resume)
        return run

    def _optimise(self) -> None:
        """The optimiser over what trains, and its schedule."""
        training, stage, model = self.inputs.config.training, self.inputs.config.training.unfrozen, self.model
        if training.strategy == "lora" and self.policy.runs:
            groups = [
                {"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": training.weight_decay}
            ]
        else:
            groups = layerwise_groups(
                model, self.spec, stage.learning_rate, stage.layer_lr_decay, training.weight_decay
            )
            groups = cached_lower_blocks.without_parameters(groups, self.policy.frozen_names)
        model.to(self.runtime.device)
        self.optimizer = make_optimizer(groups, stage.learning_rate)
        embedding_rows.attach(self.seen_rows, self.optimizer)
        self.scheduler = _schedule(self.optimizer, training, self.policy, groups, len(self.data.train))

    def _start_loop(self) -> None:
        inputs, training, ddp = self.inputs, self.inputs.config.training, self.ddp
        max_minutes = training.unfrozen.max_minutes
        budget = max_minutes * 60 if max_minutes else None
        self.loop = stage_loop(inputs, "unfrozen", self.policy.epochs, max_seconds=budget)
        self.loop.batches_per_epoch = network_batches(len(self.data.train), training.batch_size)
        self.depths, self.top = depth_of_parameters(self.model, self.spec), num_layers(self.model) + 1
        if self.policy.frozen_from_start:
            self._switch_to_upper(trained=False)
        elif ddp is not None and self.policy.runs:  # rebuilt at a later switch (the old wrapper's hooks go with it)
            self.parallel = ddp.parallel(self.network, self.spec)
        if ddp is not None and not ddp.is_main:  # resumes from rank 0's checkpoints, never writes them
            self.loop.checkpointer = distributed.ReadOnlyCheckpointer(self.loop.checkpointer.directory)

    def _switch_to_upper(self, trained: bool) -> None:
        """From here on, the frozen lower blocks run once, into the layer cache; each step runs the rest.
        ``trained``: they trained in this run before freezing (``freeze_after_epochs``)."""
        inputs, network = self.inputs, self.network
        splits = {"train": self.data.train, "validation": self.data.validation}
        self.part = cached_lower_blocks.stage_part(
            network,
            self.spec,
            self.meta,
            self.policy.frozen,
            splits=splits,
            checkpoint=inputs.start,
            runtime=self.runtime,
            training=inputs.config.training,
            ddp=self.ddp,
            progress=inputs.progress,
            trained=trained,
        )
        self.parallel = self.ddp.parallel(network, self.part.spec) if self.ddp is not None else None

    def train_epoch(self, epoch: int):
        if self.policy.on_epoch_start(epoch, self.network, self.model, self.depths, self.top):
            self._switch_to_upper(trained=True)  # also on a resume past the switch
        training, part = self.inputs.config.training, self.part
        # with frozen lower blocks the epoch runs on their cached states: only the upper part trains
        source, run_spec = (part.train, part.spec) if part is not None else (self.data.train, self.spec)
        outcome = network_epoch(
            self.network,
            run_spec,
            source,
            self.data.train_targets,
            epoch_rng(training.seed, "unfrozen", epoch),
            self.data.step_settings(self.inputs, self.optimizer, self.scheduler, self.runtime),
            deadline=self.loop.deadline,
            dist=self.parallel,
            inputs_of=cached_lower_blocks.cached_inputs(part.train) if part is not None else None,
            on_outputs=self.margins.hearing(epoch - 1) if self.margins is not None else None,
        )
        if self.margins is not None:
            self.margins.end_epoch(epoch - 1, self.ddp)
        return outcome

    def validate(self) -> dict:
        inputs, batches = self.inputs, self.inference
        if self.part is not None:
            part = self.part
            outputs = cached_lower_blocks.upper_outputs(self.network, part.spec, part.validation, batches, self.runtime)
            return score_split(inputs.prepared, outputs, self.data.validation_targets)
        validation = (self.data.validation, self.data.validation_targets)
        return score_network(inputs.prepared, self.network, validation, batches, self.runtime, self.spec)

    def finish(self, result: StageResult) -> StageResult:
        """The stage's record, the model made plain again (LoRA merged, every parameter trainable), saved by rank 0."""
        training, policy, model = self.inputs.config.training, self.policy, self.model
        if self.part is not None and policy.after_epochs:  # keyed by weights only this run had: no later run can hit it
            cached_lower_blocks.discard(self.part, self.ddp)
        result.extra.update(embedding_rows.fold_back(model, self.seen_rows))
        result.extra.update(**self.runtime.record(), device=str(self.runtime.device), strategy=training.strategy)
        result.extra["dropout_masks"] = self.dropout_masks
        if self.part is not None:
            result.extra.update(self.part.extra, freeze_after_epochs=policy.after_epochs)
        if training.strategy == "lora" and policy.runs:
            model = model.merge_and_unload()  # a plain model: loads without peft, serves at full speed
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        if self.ddp is not None:
            result.extra["num_processes"] = self.ddp.world
            if not self.ddp.is_main:
                return result
        return save_stage(model.cpu(), self.tokenizer, self.meta, self.inputs.out_dir, result)


def _schedule(optimizer, training, policy: FreezePolicy, groups: list[dict], train_rows: int):
    """Stage 2's learning-rate schedule: over the time budget, over the epochs, or (blocks that
    freeze after N epochs) with their groups landing at N."""
    stage = training.unfrozen
    per_epoch = -(-train_rows // training.batch_size)
    steps = policy.epochs * per_epoch
    warmup = int(stage.warmup_ratio * steps)
    if stage.max_minutes:  # decay over the budget, not over epochs the budget would cut short
        return BudgetSchedule(optimizer, stage.scheduler, stage.warmup_ratio, steps, stage.max_minutes * 60)
    if policy.after_epochs:  # blocks that freeze after N epochs finish their own schedule by then
        # depth 0: embeddings, block i: depth i + 1; LoRA's one group of adapters keeps the shared schedule
        landing = ["depth" in g and g["depth"] <= policy.frozen for g in groups]
        landing_steps = policy.after_epochs * per_epoch
        return landing_scheduler(optimizer, stage.scheduler, warmup, max(steps, 1), landing_steps, landing)
    return make_scheduler(optimizer, stage.scheduler, warmup, max(steps, 1))
