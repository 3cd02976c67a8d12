"""The training stages as Prefect tasks; each returns its stage result, models stay on disk.

Each stage logs one line per epoch and moves the run's progress artifact (``progress_artifact``,
made by the flow); the command line's live bar hears the same events (tasks.prefect_io.progress)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from uuid import UUID

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.prepare import PreparedData
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.evaluation.suspect_labels import OUT_OF_FOLD_FILE
from finetune_core.run_layout import RunLayout
from finetune_core.serving.predictor import load_meta
from finetune_core.training import calibration_step, frozen_stage, recipe, unfrozen_stage
from finetune_core.training.contrastive import train_contrastive as tune_on_pairs
from finetune_core.training.loop import StageResult
from finetune_core.training.margins import MARGINS_FILE
from finetune_core.training.stage_setup import StageInputs
from tasks.mlflow_io.tracking import epoch_logger, log_metrics, shorten
from tasks.prefect_io.progress import stage_progress

_TIMINGS = ("wall_seconds", "train_seconds", "samples_per_second", "train_examples", "epochs_run", "best_epoch")


# The unfrozen stage's resolution is the run's: it trains the whole network (docs/concepts/precision.md)
_PRECISION_PARAMS = {
    "precision": "training.precision_resolved",
    "precision_reason": "training.precision_reason",
    "precision_bf16_ratio": "training.precision_bf16_ratio",
    "inference_precision": "training.inference_precision_resolved",
    "inference_precision_reason": "training.inference_precision_reason",
    "inference_precision_bf16_ratio": "training.inference_precision_bf16_ratio",
}


def _log_precision(run_id: str, result: StageResult) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Param

    params = [
        Param(key, shorten(str(result.extra[name]))) for name, key in _PRECISION_PARAMS.items() if name in result.extra
    ]
    if params:
        MlflowClient().log_batch(run_id, params=params)  # the same values again on resume: allowed


def _report(run_id: str, result: StageResult) -> StageResult:
    if result.stage == "unfrozen":
        _log_precision(run_id, result)
    numbers = {key: getattr(result, key) for key in _TIMINGS}
    numbers.update({k: v for k, v in result.extra.items() if isinstance(v, (int, float))})
    log_metrics(run_id, numbers, prefix=f"{result.stage}/")
    get_run_logger().info(
        "%s stage: %d/%d epoch(s), best epoch %d, %.1f s, %.1f samples/s%s",
        result.stage,
        result.epochs_run,
        result.epochs,
        result.best_epoch,
        result.wall_seconds,
        result.samples_per_second,
        " (stopped early)" if result.stopped_early else "",
    )
    return result


_OUTPUT = {"contrastive": "contrastive", "frozen": "frozen", "unfrozen": "model"}  # each stage's RunLayout directory


def _inputs(stage: str, config, prepared, start, layout: RunLayout, run_id: str, resume: bool, progress_artifact):
    """A stage's inputs as every stage task gives them: its output directory in ``layout``, epochs
    logged to the run, per-epoch checkpoints, and progress to the log line and the run's artifact."""
    return StageInputs(
        config,
        prepared,
        start,
        getattr(layout, _OUTPUT[stage]),
        on_epoch_end=epoch_logger(run_id),
        checkpoints=layout.checkpoints,
        resume=resume,
        progress=stage_progress(stage, get_run_logger(), progress_artifact),
    )


@task(name="choose-recipe", cache_policy=NO_CACHE)
def choose_recipe(
    config: FinetuneConfig, prepared: PreparedData, run_id: str
) -> tuple[FinetuneConfig, recipe.Recipe, PreparedData]:
    """The configuration the stages run (``strategy: auto`` resolved; best-epoch restore and
    calibration off on a tiny validation split), the choice and why (run params and a log line),
    and the data the stages train on (held-out validation rows folded into train for `auto`'s
    contrastive recipe)."""
    from mlflow import MlflowClient

    given = prepared.fingerprint
    resolved, chosen, prepared = recipe.resolve(config, prepared)
    client = MlflowClient()
    if prepared.fingerprint != given:  # validation rows folded into train: what trains is new data
        client.set_tag(run_id, "data_fingerprint", prepared.fingerprint)
    for key, value in {
        "training.strategy_resolved": chosen.strategy,
        "training.strategy_reason": chosen.reason,
        "training.validation_use": chosen.validation,
    }.items():
        client.log_param(run_id, key, shorten(value))  # the same value again on resume: allowed
    logger = get_run_logger()
    logger.info("strategy %s (%s): %s", chosen.strategy, config.training.strategy, chosen.reason)
    if chosen.validation != "used":
        logger.warning(
            "validation split not used (%s): no best-epoch restore, early stopping or calibration", chosen.validation
        )
    return resolved, chosen, prepared


@task(name="train-contrastive", cache_policy=NO_CACHE)
def train_contrastive(
    config: FinetuneConfig,
    prepared: PreparedData,
    backbone: str,
    layout: RunLayout,
    run_id: str,
    resume: bool = False,
    progress_artifact: UUID | None = None,
) -> StageResult:
    """Strategy contrastive: the backbone tuned on same/different-class pairs; encoder in
    layout.contrastive, which the frozen stage then loads."""
    result = tune_on_pairs(
        _inputs("contrastive", config, prepared, backbone, layout, run_id, resume, progress_artifact)
    )
    if sides := result.extra.get("encode_sides"):  # `auto` resolved from the rows per class
        from mlflow import MlflowClient

        MlflowClient().log_param(run_id, "training.contrastive.encode_sides_resolved", sides)
        if (rate := result.extra.get("peak_learning_rate")) is not None:  # `None` resolved from the rows too
            MlflowClient().log_param(run_id, "training.contrastive.learning_rate_resolved", rate)
    return _report(run_id, result)


@task(name="train-frozen", cache_policy=NO_CACHE)
def train_frozen(
    config: FinetuneConfig,
    prepared: PreparedData,
    backbone: str,
    layout: RunLayout,
    run_id: str,
    resume: bool = False,
    known_features: str | None = None,
    progress_artifact: UUID | None = None,
) -> StageResult:
    """Stage 1: the task head on cached frozen-backbone features (train rows backbone selection
    extracted are reused); model in layout.frozen."""
    inputs = _inputs("frozen", config, prepared, backbone, layout, run_id, resume, progress_artifact)
    result = frozen_stage.train_frozen(inputs, known_features=Path(known_features) if known_features else None)
    return _report(run_id, result)


@task(name="train-unfrozen", cache_policy=NO_CACHE)
def train_unfrozen(
    config: FinetuneConfig,
    prepared: PreparedData,
    layout: RunLayout,
    run_id: str,
    resume: bool = False,
    progress_artifact: UUID | None = None,
) -> StageResult:
    """Stage 2: unfreeze and fine-tune from the stage-1 model; model in layout.model."""
    inputs = _inputs("unfrozen", config, prepared, layout.frozen, layout, run_id, resume, progress_artifact)
    if config.validation.suspect_labels != "off":  # the label review's second reading (tasks.review)
        inputs = replace(inputs, margins_file=layout.review / MARGINS_FILE)
    result = unfrozen_stage.train_unfrozen(inputs)
    return _report(run_id, result)


@task(name="calibrate", cache_policy=NO_CACHE)
def calibrate(config: FinetuneConfig, prepared: PreparedData, layout: RunLayout, run_id: str) -> dict:
    """Temperature scaling fitted on validation, stored with the model (classification only); on
    the label review's out-of-fold logits when validation was too small to fit it on."""
    calibration = calibration_step.calibrate(config, prepared, layout.model)
    folds = layout.review / OUT_OF_FOLD_FILE  # written by the label review when validation is too small
    if not calibration and prepared.task == "classification" and folds.is_file():
        with np.load(folds) as saved:
            calibration = calibration_step.calibrate_out_of_fold(layout.model, saved["logits"], saved["targets"])
        log_metrics(run_id, calibration, prefix="calibration/")
        how = "kept at 1: they do not beat the majority class" if "oof_temperature_kept" in calibration else "fitted"
        get_run_logger().info(
            "temperature %.3f on out-of-fold predictions, %s (ECE %.4f -> %.4f)",
            calibration["temperature"],
            how,
            calibration["oof_ece_before"],
            calibration["oof_ece_after"],
        )
        return calibration
    if config.task == "multilabel":  # per-label temperatures and thresholds; what was skipped and why
        log_metrics(run_id, calibration, prefix="calibration/")
        logger = get_run_logger()
        logger.info(
            "decision thresholds tuned per label: validation macro-F1 %.4f at 0.5 -> %.4f tuned",
            calibration["val_f1_macro_at_0.5"],
            calibration["val_f1_macro_tuned"],
        )
        for note in load_meta(layout.model).calibration_notes:
            logger.info("%s", note)
        return calibration
    if not calibration:
        return calibration
    log_metrics(run_id, calibration, prefix="calibration/")
    if "temperature_given" in calibration:
        get_run_logger().info("temperature %.3f given in training.temperature, not fitted", calibration["temperature"])
    else:
        get_run_logger().info(
            "temperature %.3f (validation ECE %.4f -> %.4f)",
            calibration["temperature"],
            calibration["val_ece_before"],
            calibration["val_ece_after"],
        )
    return calibration


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(config: FinetuneConfig, prepared: PreparedData, layout: RunLayout) -> dict:
    """Test metrics as served; the served predictions are kept for the gates and reviewers. The
    metrics are logged with the logged model (``log_model``), so its MLflow page shows them."""
    metrics = evaluate_model(config, prepared, layout.model, layout.test_predictions)
    get_run_logger().info(
        "test metrics: %s", {k: round(v, 4) for k, v in metrics.items() if not k.startswith("support")}
    )
    return metrics
