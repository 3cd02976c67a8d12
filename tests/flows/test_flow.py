"""The whole `finetune` flow on a tiny backbone, under a real (temporary) Prefect API server,
tracked in a real MLflow SQLite store."""

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.errors import ConfigError, DataError
from tests.conftest import tiny_config


@pytest.fixture
def flow_config(tiny_backbone, sst2_small, tracking_uri, tmp_path):
    return validate_config(tiny_config(tiny_backbone, sst2_small, tracking_uri, tmp_path))


def test_flow_tracks_registers_and_serves(prefect_server, flow_config, tracking_uri):
    from flows.finetune import finetune

    result = finetune(flow_config)
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.frozen.epochs"] == "1" and run.data.params["task"] == "classification"
    assert run.data.tags["config_hash"] == flow_config.fingerprint()
    for name in ("frozen/train_loss", "frozen/val_accuracy", "unfrozen/val_accuracy", "unfrozen/samples_per_second"):
        assert client.get_metric_history(result.mlflow_run_id, name), name
    assert run.data.metrics["test/accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert {"f1_macro", "precision_0", "recall_1"} <= set(result.metrics)
    assert set(result.stages) == {"frozen", "unfrozen"} and result.stages["frozen"]["train_examples"] == 108
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert {"config.yaml", "summary.json", "data", "validation"} <= artifacts
    reports = {a.path for a in client.list_artifacts(result.mlflow_run_id, "validation")}
    assert {"validation/summary.md", "validation/validation_results.json", "validation/data_docs"} <= reports

    assert result.model_version == "1"
    version = client.get_model_version("tiny-model", "1")
    assert version.run_id == result.mlflow_run_id
    assert version.tags["task"] == "classification" and len(version.tags["data_fingerprint"]) == 16

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model("models:/tiny-model/1")
    predictions = model.predict(pd.DataFrame({"sentence": ["a gorgeous , witty film", "a dull mess"]}))
    assert list(predictions.columns) == ["label", "probability_0", "probability_1"]
    assert predictions["label"].isin(["0", "1"]).all()
    assert model.metadata.get_input_schema().input_names() == ["sentence"]

    second = finetune(flow_config)
    assert second.model_version == "2" and second.mlflow_run_id != result.mlflow_run_id

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        published = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["registered-version"]))
        )
    assert any("models:/tiny-model/2" in a.data and "Gates passed" in a.data for a in published)


def test_bad_data_fails_the_run_and_registers_nothing(prefect_server, flow_config, tracking_uri, tmp_path):
    from flows.finetune import finetune

    flow_config.data.test = tmp_path / "missing.tsv"
    with pytest.raises(DataError, match="missing.tsv"):
        finetune(flow_config)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert client.search_registered_models() == []


def test_failed_validation_stops_before_training_with_the_report_on_the_failed_run(
    prefect_server, flow_config, sst2_small, tracking_uri, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from finetune_core.errors import DataValidationError
    from flows.finetune import finetune

    flow_config.data.test = sst2_small["train"]  # every test text is also in train
    with pytest.raises(DataValidationError, match=r"leakage"):
        finetune(flow_config)
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED" and client.search_registered_models() == []
    assert not [m for m in run.data.metrics if m.startswith(("frozen/", "unfrozen/"))]  # no training happened
    reports = {a.path for a in client.list_artifacts(run.info.run_id, "validation")}
    assert {"validation/summary.md", "validation/validation_results.json", "validation/data_docs"} <= reports
    summary = client.download_artifacts(run.info.run_id, "validation/summary.md", str(tmp_path))
    assert "| **error** | test | leakage |" in open(summary, encoding="utf-8").read()
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["data-validation"])),
            sort=ArtifactSort.CREATED_DESC,
        )
    assert artifacts and "leakage" in artifacts[0].data  # the newest: this flow run's


def test_long_parameter_values_are_truncated_not_fatal(tracking_uri, tmp_path):
    from tasks.mlflow_io.tracking import TRUNCATED_MARK, log_config

    config = validate_config(
        {
            "data": {"train": "t.csv", "test": "t.csv"},
            "backbone": {"candidates": [f"org/model-{i:04d}-with-a-long-name" for i in range(400)]},
        }
    )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("params")
    with mlflow.start_run() as run:
        log_config(run.info.run_id, config)
    params = MlflowClient(tracking_uri).get_run(run.info.run_id).data.params
    assert len(params["backbone.candidates"]) == 6000 and params["backbone.candidates"].endswith(TRUNCATED_MARK)
    logged = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml"))
    assert len(logged["backbone"]["candidates"]) == 400


class Killed(Exception):
    pass


def test_a_killed_run_resumes_in_its_mlflow_run_and_matches_an_uninterrupted_run(
    prefect_server, flow_config, tracking_uri, tmp_path, monkeypatch
):
    import tasks.train
    from flows.finetune import finetune

    flow_config.training.unfrozen.epochs = 2
    real_logger = tasks.train.epoch_logger

    def dying_logger(run_id):
        log = real_logger(run_id)

        def on_epoch_end(stage, epoch, metrics):
            log(stage, epoch, metrics)
            if (stage, epoch) == ("unfrozen", 1):
                raise Killed("stopped after the first unfrozen epoch")

        return on_epoch_end

    monkeypatch.setattr(tasks.train, "epoch_logger", dying_logger)
    with pytest.raises(Killed):
        finetune(flow_config)
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "runs").iterdir()
    client = MlflowClient(tracking_uri)
    (failed,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert failed.info.status == "FAILED" and client.search_registered_models() == []

    resumed = finetune(flow_config, resume=str(run_dir))
    assert resumed.mlflow_run_id == failed.info.run_id
    assert client.get_run(resumed.mlflow_run_id).info.status == "FINISHED"
    assert resumed.stages["unfrozen"]["resumed_after_epoch"] == 1 and resumed.model_version == "1"
    assert [m.step for m in client.get_metric_history(resumed.mlflow_run_id, "unfrozen/val_accuracy")] == [1, 2]

    straight = finetune(flow_config)
    assert straight.metrics == resumed.metrics

    flow_config.training.seed = 7
    with pytest.raises(ConfigError, match="configuration differs"):
        finetune(flow_config, resume=str(run_dir))
