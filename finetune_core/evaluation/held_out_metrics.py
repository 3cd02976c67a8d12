"""The test metrics, computed once: the model's outputs in their served form (what the logged
pyfunc model returns, temperature applied) scored by the same function that scores the
champion, so both are measured the same way on the same rows."""

from __future__ import annotations

from pathlib import Path

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.prepare import LABEL, PreparedData
from finetune_core.metrics.calibration import expected_calibration_error
from finetune_core.metrics.served import served_metrics
from finetune_core.serving.predictor import outputs_to_frame
from finetune_core.training.encoded_splits import outputs_for


def evaluate_model(
    config: FinetuneConfig, prepared: PreparedData, model_dir: Path, predictions: Path | None = None
) -> dict:
    """Test metrics of the saved model as served; its served predictions (with text and target)
    are written to ``predictions`` (when given) for the gates and the review files. Classification also
    reports ``ece_uncalibrated`` (before temperature scaling)."""
    outputs, targets, meta = outputs_for(config, prepared, Path(model_dir), "test")
    served = outputs_to_frame(outputs, meta)
    test = prepared.frame("test")
    metrics = served_metrics(prepared.task, served, test[LABEL].to_numpy(), prepared.labels)
    if prepared.task == "classification":
        metrics["ece_uncalibrated"] = expected_calibration_error(outputs, targets)
    if predictions is not None:
        texts = {c: test[c].to_numpy() for c in prepared.text_columns}  # a pair: both texts
        target = test[LABEL].map(list) if prepared.task == "multilabel" else test[LABEL]  # label ids per row
        served.assign(**texts, target=target.to_numpy()).to_parquet(predictions, index=False)
    return metrics
