"""The winner's configuration: the study's best parameters merged into the given configuration and, under
``search.refit_on: train+validation``, the temperature its trial leaves it for the validation rows it now
trains on (docs/decisions/sweep-refit.md)."""

from __future__ import annotations

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.search.space import with_overrides


def refit_on(config: FinetuneConfig) -> str:
    """``search.refit_on`` resolved: ``auto`` trains a classification winner on train + validation (measured on
    SST-2 and MRPC), any other task's on train (regression unmeasured; multilabel tunes thresholds on them)."""
    if config.search.refit_on != "auto":
        return config.search.refit_on
    return "train+validation" if config.task == "classification" else "train"


def winner_config(config: FinetuneConfig, best_params: dict, *, temperature: float | None = None) -> FinetuneConfig:
    """``best_params`` merged into ``config``; under ``refit_on: train+validation`` the validation rows train
    too (the run keeps its last epoch: stopping at the epoch the trial was scored on measured worse,
    docs/decisions/sweep-refit.md), and the temperature the trial fitted on those rows is given."""
    merged = with_overrides(config, best_params)
    if refit_on(config) != "train+validation":
        return merged
    update = {"data": merged.data.model_copy(update={"train_on_validation": True})}
    if temperature is not None:  # fitted by the winning trial on the rows the winner now trains on
        update["training"] = merged.training.model_copy(update={"temperature": temperature})
    return merged.model_copy(update=update)
