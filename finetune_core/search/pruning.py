"""The pruner's ear in the epoch loop: an epoch callback that reports each epoch's validation metric to
the trial and stops the stage (``StopStage``) when the pruner says so. Training runs the same without it."""

from __future__ import annotations

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.faults import maybe_kill
from finetune_core.metric_table import primary_metric
from finetune_core.training.loop import EpochCallback, StopStage

LOSS_METRIC = {"classification": "loss", "multilabel": "loss", "regression": "mse"}  # what training minimises


def pruning_signal(config: FinetuneConfig, task: str) -> tuple[str, float]:
    """(validation metric, sign) the pruner hears: ``search.prune_on``'s choice, signed so that the study's
    direction (the objective metric's) applies to it. The loss by default: on SST-2 sweeps it saved 33–50 %
    of trial time at the unpruned sweep's result, where accuracy on 200 rows saved a quarter
    (docs/benchmarks/hyperparameter-search.md)."""
    metric, larger_is_better = primary_metric(task, config.training.metric)
    if config.search.prune_on == "metric":
        return metric, 1.0
    return LOSS_METRIC[task], -1.0 if larger_is_better else 1.0


class PruningCallback:
    """Reports ``sign * val_<metric>`` of ``stage`` as the trial's intermediate value, step = epoch.
    The pruner is not asked at ``last_epoch``: stopping there saves no time, and a pruned trial's score
    is out of the race (docs/benchmarks/hyperparameter-search.md: 4 of 16 pruned trials were)."""

    def __init__(self, trial, stage: str, metric: str, last_epoch: int | None = None, sign: float = 1.0):
        self.trial, self.stage, self.metric, self.last_epoch, self.sign = trial, stage, metric, last_epoch, sign
        self.pruned_at: int | None = None

    def __call__(self, stage: str, epoch: int, metrics: dict) -> None:
        if stage != self.stage or f"val_{self.metric}" not in metrics:
            return
        self.trial.report(self.sign * float(metrics[f"val_{self.metric}"]), epoch)
        maybe_kill(f"trial:{self.trial.number}:epoch:{epoch}")  # the sweep's resume tests
        if epoch != self.last_epoch and self.trial.should_prune():
            self.pruned_at = epoch
            raise StopStage(f"pruned at epoch {epoch}")


def chain(*callbacks: EpochCallback | None) -> EpochCallback:
    """Call each in turn (the logger before the pruner, so the pruned epoch is logged too)."""
    present = [c for c in callbacks if c is not None]

    def call(stage: str, epoch: int, metrics: dict) -> None:
        for callback in present:
            callback(stage, epoch, metrics)

    return call
