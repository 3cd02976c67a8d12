"""A gate-rejected run looks rejected in Prefect: its `finetune` flow run ends `Completed` named
`Rejected` (an accepted one: `Completed`), with the reason in the state message and the
`registered-version` artifact; the CLI still exits 3, and a parent flow still gets the result."""

from __future__ import annotations

import json

import yaml
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.client.schemas.objects import StateType

from finetune_core.config.loading import validate_config
from tests.conftest import tiny_config
from tests.datasets import easy_sentiment

UNREACHABLE = {"min": {"accuracy": 0.99}}  # a tiny random BERT after two epochs never gets there


def _final_state(flow_run_id: str):
    with get_client(sync_client=True) as prefect:
        return prefect.read_flow_run(flow_run_id).state


def _published(flow_run_id: str) -> str:
    with get_client(sync_client=True) as prefect:
        (artifact,) = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["registered-version"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    return artifact.data


def _flow_run_of(tracking_uri: str, mlflow_run_id: str) -> str:
    return MlflowClient(tracking_uri).get_run(mlflow_run_id).data.tags["prefect.flow_run_id"]


def test_a_rejected_run_ends_completed_named_rejected_and_the_cli_exits_3(
    finetune_cli, tiny_backbone, sst2_small, tmp_path
):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = tiny_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, gates=UNREACHABLE)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))

    result = finetune_cli("run", str(tmp_path / "config.yaml"), "--summary-json", str(tmp_path / "summary.json"))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "gates failed" in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["gate_passed"] is False and summary["model_version"] == "1"

    flow_run_id = _flow_run_of(tracking_uri, summary["mlflow_run_id"])
    state = _final_state(flow_run_id)
    assert (state.type, state.name) == (StateType.COMPLETED, "Rejected")
    assert "tiny-model v1 rejected by the gates" in state.message and "accuracy" in state.message
    assert "rejected by the gates" in _published(flow_run_id)


def test_a_parent_flow_gets_the_result_of_a_rejected_subflow(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path
):
    from flows.finetune import finetune

    config = validate_config(tiny_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, gates=UNREACHABLE))

    @flow
    def parent() -> dict:  # as the retrain flow uses the finetune subflow's result
        result = finetune(config)
        return {"version": result.model_version, "passed": result.gate_passed, "run": result.mlflow_run_id}

    state = parent(return_state=True)
    assert (state.type, state.name) == (StateType.COMPLETED, "Completed")  # the parent itself did not fail
    outcome = state.result()
    assert outcome["version"] == "1" and outcome["passed"] is False
    subflow = _final_state(_flow_run_of(tracking_uri, outcome["run"]))
    assert (subflow.type, subflow.name) == (StateType.COMPLETED, "Rejected")


def test_an_accepted_run_ends_completed(prefect_server, tiny_backbone, tracking_uri, tmp_path):
    from flows.finetune import finetune

    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    easy_sentiment(240, 0).to_csv(files["train"], index=False)
    easy_sentiment(80, 1).to_csv(files["test"], index=False)
    raw = tiny_config(tiny_backbone, files, tracking_uri, tmp_path, gates={"min": {"accuracy": 0.7}})
    raw["backbone"]["pooling"] = "mean"  # the tiny random pooler is nearly constant
    raw["training"].update(
        frozen={"epochs": 2, "learning_rate": 1e-2},
        unfrozen={"epochs": 4, "learning_rate": 2e-3, "warmup_ratio": 0.0, "layer_lr_decay": 1.0},
        max_length=16,
    )

    result = finetune(validate_config(raw))
    assert result.gate_passed and result.champion
    flow_run_id = _flow_run_of(tracking_uri, result.mlflow_run_id)
    state = _final_state(flow_run_id)
    assert (state.type, state.name) == (StateType.COMPLETED, "Completed")
    assert "version 1: champion" in _published(flow_run_id)
