"""One trial's training: the pipeline's own stages (contrastive → frozen → unfrozen), in the trial's
directory, with the stage-1 model shared by every trial when the space only varies stage 2."""

from __future__ import annotations

from pathlib import Path

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.labels import read_labels
from finetune_core.data.prepare import PreparedData
from finetune_core.metrics.calibration import fit_temperature
from finetune_core.model.embedding_and_dropout import checkpoint_dropout
from finetune_core.run_layout import RunLayout
from finetune_core.search.refit import refit_on
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.contrastive import pair_learning_rate, train_contrastive
from finetune_core.training.encoded_splits import outputs_for
from finetune_core.training.loop import EpochCallback, StageResult
from finetune_core.training.stage_setup import StageInputs

STAGE2_PREFIX = "training.unfrozen."
DROPOUT_KEY, PAIR_RATE_KEY = "training.unfrozen.dropout", "training.contrastive.learning_rate"


def unset_values(config: FinetuneConfig, space_keys, prepared: PreparedData, backbone: str) -> dict:
    """What each key of the space that the configuration leaves None trains with: the checkpoint's
    dropout, the contrastive learning rate chosen by the training rows per class."""
    values = {}
    if DROPOUT_KEY in space_keys and config.training.unfrozen.dropout is None:
        values[DROPOUT_KEY] = checkpoint_dropout(backbone, config.backbone.trust_remote_code)
    if PAIR_RATE_KEY in space_keys and config.training.contrastive.learning_rate is None:
        values[PAIR_RATE_KEY] = pair_learning_rate(None, read_labels(prepared.paths["train"]))
    return values


def shares_stage1(space_keys) -> bool:
    """Stage 1 (pairs, head) reads no stage-2 key: trained once for the sweep, not once per trial."""
    return all(key.startswith(STAGE2_PREFIX) for key in space_keys)


def pruned_stage(config: FinetuneConfig) -> str:
    """The stage whose per-epoch validation metric the pruner hears: the last one that trains."""
    trains_stage2 = config.training.unfrozen.epochs > 0 and config.training.strategy != "linear-probe"
    return "unfrozen" if trains_stage2 else "frozen"


def stage_epochs(config: FinetuneConfig, stage: str) -> int:
    """The epochs ``stage`` (``pruned_stage``'s answer) is configured to run."""
    return config.training.unfrozen.epochs if stage == "unfrozen" else config.training.frozen.epochs


def train_stage1(
    config: FinetuneConfig,
    prepared: PreparedData,
    *,
    backbone: str,
    layout: RunLayout,
    on_epoch_end: EpochCallback | None = None,
    known_features: str | None = None,
) -> list[StageResult]:
    """Pairs (strategy contrastive) then the head, into ``layout.frozen``."""
    results = []
    if config.training.strategy == "contrastive":
        results.append(train_contrastive(StageInputs(config, prepared, backbone, layout.contrastive, on_epoch_end)))
        backbone, known_features = str(layout.contrastive), None  # the tuned encoder's features are new
    known = Path(known_features) if known_features else None
    results.append(
        frozen_stage.train_frozen(
            StageInputs(config, prepared, backbone, layout.frozen, on_epoch_end, layout.checkpoints, False),
            known_features=known,
        )
    )
    return results


def train_trial(
    config: FinetuneConfig,
    prepared: PreparedData,
    *,
    backbone: str,
    layout: RunLayout,
    stage1: Path | None,
    on_epoch_end: EpochCallback | None = None,
) -> StageResult:
    """Train one trial's configuration; ``stage1``: a shared stage-1 model directory (else trained
    here). Returns the result of the stage the objective is read from."""
    results = (
        []
        if stage1 is not None
        else train_stage1(config, prepared, backbone=backbone, layout=layout, on_epoch_end=on_epoch_end)
    )
    if pruned_stage(config) == "frozen":
        return results[-1]
    start = stage1 if stage1 is not None else layout.frozen
    return unfrozen_stage.train_unfrozen(
        StageInputs(config, prepared, start, layout.model, on_epoch_end, layout.checkpoints, False)
    )


def refit_temperature(config: FinetuneConfig, prepared: PreparedData, layout: RunLayout) -> float | None:
    """The temperature of this trial's model (its scored epoch) fitted on the validation rows it was scored
    on: the one the winner is given when it trains on those rows too (``search.refit_on: train+validation``,
    docs/decisions/sweep-refit.md). None where the winner fits its own, or none."""
    if not (refit_on(config) == "train+validation" and prepared.task == "classification"):
        return None
    if not config.training.calibrate or config.training.temperature is not None:
        return None
    model_dir = layout.model if pruned_stage(config) == "unfrozen" else layout.frozen
    outputs, targets, _ = outputs_for(config, prepared, model_dir, "validation")
    return fit_temperature(outputs, targets)


def scored_epoch_loss(result: StageResult, loss_metric: str) -> float | None:
    """The validation loss (``loss_metric``: loss, or mse for regression) at the epoch the trial is scored
    on (``best_epoch``): what breaks a tie between trials scored alike (``study.best_trial``)."""
    entry = next((e for e in result.history if e["epoch"] == result.best_epoch), {})
    value = entry.get(f"val_{loss_metric}")
    return None if value is None else float(value)
