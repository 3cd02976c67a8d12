"""`finetune run` as a user first meets it: the installed command in a fresh process, on the
default settings (`training.device: auto`, the thread task runner and its default workers).

Tests in this pytest process have already resolved devices and built singletons by the time
these run; only a fresh process shows what a user's first run does (several backbone
candidates once crashed it with accelerate's half-initialised ``PartialState``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.selection.candidates import TIE, CandidateFailed, rank_backbones
from tests.conftest import read_sst2, tiny_config
from tests.datasets import easy_sentiment
from tests.tiny_models import build_tiny_bert

SIZES = {"narrow": (16, 1), "middle": (32, 2), "wide": (64, 3)}  # name: (hidden size, layers)


@pytest.fixture(scope="module")
def tiny_candidates(tmp_path_factory) -> dict[str, Path]:
    """Three tiny random BERTs of different widths and depths."""
    corpus = read_sst2("train")["sentence"].tolist() + read_sst2("test")["sentence"].tolist()
    root = tmp_path_factory.mktemp("candidates")
    return {
        name: build_tiny_bert(root / name, corpus, hidden=hidden, layers=layers)
        for name, (hidden, layers) in SIZES.items()
    }


@pytest.fixture
def easy_files(tmp_path) -> dict[str, Path]:
    """A task the tiny models learn in a few epochs, so the run passes its default gates (the
    trivial baseline among them) and exits 0."""
    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    easy_sentiment(240, 0).to_csv(files["train"], index=False)
    easy_sentiment(80, 1).to_csv(files["test"], index=False)
    return files


def _easy_config(candidates: list[str], files: dict[str, Path], tracking_uri: str, tmp_path: Path) -> dict:
    raw = tiny_config(Path(candidates[0]), files, tracking_uri, tmp_path)
    raw["backbone"] = {"candidates": candidates, "pooling": "mean"}  # the tiny random pooler is nearly constant
    raw["training"].update(
        frozen={"epochs": 2, "learning_rate": 1e-2},
        unfrozen={"epochs": 4, "learning_rate": 2e-3, "warmup_ratio": 0.0, "layer_lr_decay": 1.0},
        max_length=16,
    )
    return raw


def _write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _ranking_artifact(prefect_server: str, flow_run_id: str) -> list[dict]:
    """The `backbone-ranking` table of the select-backbone subflow of this flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    with get_client(sync_client=True) as prefect:
        assert str(prefect.api_url).rstrip("/") == prefect_server.rstrip("/")
        subflows = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["backbone-ranking"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id for run in subflows]),
            )
        )
    assert len(artifacts) == 1, [run.name for run in subflows]
    return json.loads(artifacts[0].data)


def test_three_candidates_on_the_default_settings_in_a_fresh_process(
    finetune_cli, prefect_server, tiny_candidates, easy_files, tmp_path
):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = _easy_config([str(path) for path in tiny_candidates.values()], easy_files, tracking_uri, tmp_path)
    # the defaults, on purpose: no device, precision, task runner or worker count
    assert not {"device", "precision", "num_threads"} & set(raw["training"])
    assert not {"task_runner", "selection_workers"} & set(raw["backbone"])
    config = validate_config(raw)
    assert (config.training.device, config.backbone.task_runner) == ("auto", "thread")
    assert config.backbone.selection_workers > 1  # candidates really are scored at the same time

    summary_json = str(tmp_path / "summary.json")
    result = finetune_cli("run", str(_write_config(tmp_path, raw)), "--summary-json", summary_json, user_threads=True)
    assert result.returncode == 0, result.stderr[-4000:]

    # The winner, computed again by the library alone: one candidate after another, no Prefect.
    expected = rank_backbones(config, prepare_splits(config, tmp_path / "check"), tmp_path / "check-selection")
    winner = expected.selected.candidate
    assert expected.selected.path == winner  # absolute local paths: what is configured is what is loaded
    summary = json.loads((tmp_path / "summary.json").read_text())
    client = MlflowClient(tracking_uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.tags["backbone"] == winner == summary["backbone"]
    assert client.get_model_version("tiny-model", summary["model_version"]).tags["backbone"] == winner

    mlflow.set_tracking_uri(tracking_uri)
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/selection/ranking.json")["ranking"]
    assert [row["candidate"] for row in logged] == [s.candidate for s in expected.ranking]
    assert [row["rank"] for row in logged] == [1, 2, 3] and [row["selected"] for row in logged] == [True, False, False]
    scores = [row["score"] for row in logged]
    assert all(better >= worse - TIE for better, worse in zip(scores, scores[1:]))  # best first (ties: smaller)
    assert scores == pytest.approx([round(s.score, 4) for s in expected.ranking], abs=2e-4)

    table = _ranking_artifact(prefect_server, run.data.tags["prefect.flow_run_id"])
    assert [row["candidate"] for row in table] == [row["candidate"] for row in logged]
    assert table[0]["selected"] is True and table[0]["candidate"] == winner


def test_a_candidate_that_cannot_be_loaded_is_named_in_one_line(finetune_cli, tiny_candidates, sst2_small, tmp_path):
    broken = tmp_path / "broken-candidate"
    shutil.copytree(tiny_candidates["narrow"], broken)
    (broken / "config.json").write_text('{"model_type": "bert", ')  # cut off mid-file
    raw = tiny_config(tiny_candidates["middle"], sst2_small, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    raw["backbone"] = {"candidates": [str(tiny_candidates["middle"]), "./broken-candidate"]}

    result = finetune_cli("run", str(_write_config(tmp_path, raw)))
    assert result.returncode == 2, result.stderr[-4000:]
    assert "backbone candidate './broken-candidate'" in result.stderr and "not a valid JSON file" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unexpected_error_scoring_a_candidate_names_it(
    prefect_server, tiny_candidates, sst2_small, tracking_uri, tmp_path
):
    from flows.finetune import finetune

    odd = tmp_path / "odd-candidate"
    shutil.copytree(tiny_candidates["narrow"], odd)
    settings = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**settings, "hidden_size": "wide"}))  # valid JSON, wrong type
    raw = tiny_config(tiny_candidates["middle"], sst2_small, tracking_uri, tmp_path)
    raw["backbone"] = {"candidates": [str(tiny_candidates["middle"]), str(odd)]}

    with pytest.raises(CandidateFailed, match=rf"backbone candidate '{odd}': .*hidden_size"):
        finetune(validate_config(raw))
