"""A few-shot run: on the default configuration `strategy: auto` resolves and says why (run
params, version description) and skips decisions on a 2-row validation split; with
`strategy: contrastive` the contrastive stage runs in the flow and registers a servable model."""

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
    config = validate_config(tiny_config(tiny_backbone, files, tracking_uri, tmp_path))
    assert config.training.strategy == "auto"
    automatic = finetune(config)
    client = MlflowClient(tracking_uri)
    run = client.get_run(automatic.mlflow_run_id)
    assert run.data.params["training.strategy"] == "auto"
    assert run.data.params["training.strategy_resolved"] == "lp-ft"  # what the measurement chose
    assert "rows per class" in run.data.params["training.strategy_reason"]
    assert run.data.params["training.validation_use"] == "skipped: 1 rows per class"

    config.training.strategy = "contrastive"
    result = finetune(config)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["training.strategy_resolved"] == "contrastive"
    assert run.data.params["training.validation_use"] == "skipped: 1 rows per class"
    assert list(result.stages) == ["contrastive", "frozen", "unfrozen"]
    assert result.stages["contrastive"]["extra"]["validation"] == "skipped: 1 rows per class"
    assert client.get_metric_history(result.mlflow_run_id, "contrastive/val_centroid_accuracy")
    assert result.calibration == {}  # no temperature fitted on 2 rows

    description = client.get_model_version("tiny-model", result.model_version).description
    assert "strategy chosen: `contrastive`" in description and "validation split too small" in description
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/tiny-model/{result.model_version}")
    predictions = model.predict(pd.DataFrame({"sentence": ["a great film", "an awful film"]}))
    assert predictions["label"].isin(["0", "1"]).all()
