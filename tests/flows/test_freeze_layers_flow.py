"""The flow with ``training.unfrozen.freeze_layers`` on the otherwise default configuration: stage 2
trains the upper block on cached lower-block states, the run logs the cache figures, and the logged
model is a normal full model that loads and serves through mlflow.pyfunc."""

from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.serving.predictor import load_model_dir
from tests.conftest import tiny_config


def test_flow_with_frozen_lower_blocks_logs_a_full_model(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path
):
    from flows.finetune import finetune

    raw = tiny_config(tiny_backbone, sst2_small, tracking_uri, tmp_path)
    raw["training"]["unfrozen"] = {"epochs": 2, "learning_rate": 1e-3, "freeze_layers": 1}
    result = finetune(validate_config(raw))
    unfrozen = result.stages["unfrozen"]["extra"]
    assert unfrozen["freeze_layers"] == 1 and unfrozen["layer_cache_hits"] == 2  # filled by the frozen stage
    assert result.stages["frozen"]["extra"]["layer_caches_written"] == 2
    client = MlflowClient(tracking_uri)
    assert client.get_run(result.mlflow_run_id).data.metrics["unfrozen/layer_cache_bytes_per_row"] > 0

    run_dir = Path(result.run_dir)
    frozen, final = (load_model_dir(run_dir / d)[0].state_dict() for d in ("frozen", "model"))
    assert all(
        torch.equal(frozen[n], final[n]) for n in frozen if n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
    )
    assert any(not torch.equal(frozen[n], final[n]) for n in frozen if n.startswith("bert.encoder.layer.1."))

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/tiny-model/{result.model_version}")
    predictions = model.predict(pd.DataFrame({"sentence": ["a gorgeous , witty film", "a dull mess"]}))
    assert list(predictions.columns) == ["label", "probability_0", "probability_1"]
    assert predictions["label"].isin(["0", "1"]).all()
