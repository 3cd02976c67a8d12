"""The two training stages as Prefect tasks; each returns its stage result, models stay on disk."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from finetune_core import stages
from finetune_core.config import FinetuneConfig
from finetune_core.data import PreparedData
from finetune_core.training import StageResult
from tasks.tracking import epoch_logger, log_metrics

_TIMINGS = ("wall_seconds", "train_seconds", "samples_per_second", "train_examples")


def _report(run_id: str, result: StageResult) -> StageResult:
    log_metrics(run_id, {key: getattr(result, key) for key in _TIMINGS}, prefix=f"{result.stage}/")
    get_run_logger().info(
        "%s stage: %d epoch(s), %.1f s, %.1f samples/s", result.stage, result.epochs, result.wall_seconds, result.samples_per_second
    )
    return result


@task(name="train-frozen", cache_policy=NO_CACHE)
def train_frozen(config: FinetuneConfig, prepared: PreparedData, backbone: str, run_dir: Path, run_id: str) -> StageResult:
    """Stage 1: train the task head with the backbone frozen; checkpoint in run_dir/frozen."""
    result = stages.train_frozen(config, prepared, backbone, Path(run_dir) / "frozen", epoch_logger(run_id))
    return _report(run_id, result)


@task(name="train-unfrozen", cache_policy=NO_CACHE)
def train_unfrozen(config: FinetuneConfig, prepared: PreparedData, run_dir: Path, run_id: str) -> StageResult:
    """Stage 2: unfreeze and fine-tune everything from the stage-1 checkpoint; model in run_dir/model."""
    run_dir = Path(run_dir)
    result = stages.train_unfrozen(config, prepared, run_dir / "frozen", run_dir / "model", epoch_logger(run_id))
    return _report(run_id, result)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(config: FinetuneConfig, prepared: PreparedData, model_dir: Path, run_id: str) -> dict:
    metrics = stages.evaluate_checkpoint(config, prepared, Path(model_dir), split="test")
    log_metrics(run_id, metrics, prefix="test/")
    get_run_logger().info("test metrics: %s", {k: round(v, 4) for k, v in metrics.items()})
    return metrics
