"""A few-shot run: on the default configuration `strategy: auto` picks contrastive at 8 training
rows per class (bench/fewshot.py), runs it in the flow with the head only after it, says why (run
params, version description), skips decisions on a 2-row validation split and registers a
servable model; at 40 per class it folds the held-out rows into train; `strategy: contrastive`
set by hand keeps the configured unfrozen stage."""

import json

import mlflow
import pandas as pd
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from tests.conftest import tiny_config
from tests.datasets import easy_sentiment


def test_contrastive_recipe_on_eight_rows_per_class(prefect_server, tiny_backbone, tracking_uri, tmp_path):
    from flows.finetune import finetune

    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    easy_sentiment(16, 0).to_csv(files["train"], index=False)  # 8 per class
    easy_sentiment(40, 1).to_csv(files["test"], index=False)
    raw = tiny_config(tiny_backbone, files, tracking_uri, tmp_path)
    del raw["training"]["strategy"]  # the default, as users get it
    config = validate_config(raw)
    assert config.training.strategy == "auto"
    automatic = finetune(config)
    client = MlflowClient(tracking_uri)
    run = client.get_run(automatic.mlflow_run_id)
    assert run.data.params["training.strategy"] == "auto"
    assert run.data.params["training.strategy_resolved"] == "contrastive"  # what the measurement chose
    assert "8 training rows per class" in run.data.params["training.strategy_reason"]  # all 16 rows train
    assert run.data.params["training.validation_use"] == "skipped: 1 rows per class; they train too"
    assert list(automatic.stages) == ["contrastive", "frozen", "unfrozen"]
    assert automatic.stages["unfrozen"]["epochs_run"] == 0  # auto: the head only after the pairs
    assert automatic.stages["contrastive"]["extra"]["validation"] == "skipped: 1 rows per class; they train too"
    # few rows: each side of a pair encoded on its own, with self pairs (SetFit's construction)
    assert run.data.params["training.contrastive.encode_sides_resolved"] == "separately"
    assert float(run.data.params["training.contrastive.learning_rate_resolved"]) == 6e-5  # few rows: few steps
    assert automatic.stages["contrastive"]["extra"]["self_pairs"] is True
    assert client.get_metric_history(automatic.mlflow_run_id, "contrastive/val_centroid_accuracy")
    assert "val_ece_before" not in automatic.calibration  # no temperature fitted on 2 rows: on the out-of-fold logits
    assert "oof_ece_before" in automatic.calibration
    description = client.get_model_version("tiny-model", automatic.model_version).description
    assert "strategy chosen: `contrastive`" in description and "rows per class" in description
    assert "validation split not used (skipped: 1 rows per class" in description
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/tiny-model/{automatic.model_version}")
    predictions = model.predict(pd.DataFrame({"sentence": ["a great film", "an awful film"]}))
    assert predictions["label"].isin(["0", "1"]).all()

    # 40 per class: 10 % held out is 8 rows, 4 per class, enough to decide on, but the head-only
    # contrastive recipe would spend them on a temperature alone: they train too, and what the
    # run records as its train dataset and data fingerprint is the folded split
    easy_sentiment(80, 2).to_csv(files["train"], index=False)
    folded = finetune(config)
    run = client.get_run(folded.mlflow_run_id)
    assert run.data.params["training.strategy_resolved"] == "contrastive"
    use = "skipped: contrastive on few rows trains on all 80; they train too"
    assert run.data.params["training.validation_use"] == use
    train = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}["train"]
    assert json.loads(train.profile) == {"num_rows": 80}
    assert run.data.params["training.contrastive.encode_sides_resolved"] == "once"  # 40 per class > 32
    assert float(run.data.params["training.contrastive.learning_rate_resolved"]) == 2e-5  # SetFit's
    version = client.get_model_version("tiny-model", folded.model_version)
    assert version.tags["data_fingerprint"] == run.data.tags["data_fingerprint"]
    assert "oof_ece_before" in folded.calibration

    easy_sentiment(16, 0).to_csv(files["train"], index=False)
    config.training.strategy = "contrastive"
    result = finetune(config)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["training.strategy_resolved"] == "contrastive"
    assert run.data.params["training.strategy_reason"] == "set in the configuration"
    assert result.stages["unfrozen"]["epochs_run"] == config.training.unfrozen.epochs == 1
