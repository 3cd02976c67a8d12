"""The winner's configuration: the study's best parameters merged into the given configuration and, under
``search.refit_on: train+validation``, what its trial leaves it for the validation rows it now trains on
(docs/decisions/sweep-refit.md)."""

from __future__ import annotations

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.search.space import with_overrides
from finetune_core.search.trial import pruned_stage


def winner_config(
    config: FinetuneConfig, best_params: dict, *, temperature: float | None = None, scored_epoch: int | None = None
) -> FinetuneConfig:
    """``best_params`` merged into ``config``; under ``refit_on: train+validation`` the validation rows train
    too, the stage the trial was scored on stops at the epoch it was scored on (no split is left to choose
    an epoch), and the temperature the trial fitted on those rows is given (none is left to fit one on)."""
    merged = with_overrides(config, best_params)
    if config.search.refit_on != "train+validation":
        return merged
    training = merged.training
    update: dict = {}
    if temperature is not None:
        update["temperature"] = temperature
    stage = pruned_stage(merged)
    if scored_epoch and scored_epoch < getattr(training, stage).epochs:  # 0: no epoch was scored
        update[stage] = getattr(training, stage).model_copy(update={"stop_after_epoch": scored_epoch})
    data = merged.data.model_copy(update={"train_on_validation": True})
    return merged.model_copy(update={"data": data, "training": training.model_copy(update=update)})
