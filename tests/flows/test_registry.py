"""The registry end to end against a real MLflow tracking server: champion, a weaker run gated
out (exit 3), a better run taking over, a manual rollback, and the champion served over REST."""

import json
import os
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from finetune_core.config.loading import validate_config
from flows.cli import app
from tests.datasets import easy_sentiment
from tests.servers import free_port, start, stop

NAME = "easy-sentiment"


@pytest.fixture
def easy_files(tmp_path):
    easy_sentiment(240, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(80, 1).to_csv(tmp_path / "test.csv", index=False)
    return tmp_path


def config_dict(backbone, files: Path, server: str, **training) -> dict:
    base = {
        "frozen": {"epochs": 2, "learning_rate": 1e-2},
        "unfrozen": {"epochs": 4, "learning_rate": 2e-3, "warmup_ratio": 0.0, "layer_lr_decay": 1.0},
        "batch_size": 16,
        "max_length": 16,
        "precision": "fp32",
        "cache_dir": str(files / "cache"),
    }
    base.update(training)
    return {
        "data": {"train": str(files / "train.csv"), "test": str(files / "test.csv")},
        # mean pooling: the tiny random BERT's pooler output is nearly constant, and from it the
        # head may not leave chance level within these few epochs
        "backbone": {"candidates": [str(backbone)], "pooling": "mean"},
        "training": base,
        "gates": {"min": {"accuracy": 0.7}, "max_regression": {"accuracy": 0.02}},
        "mlflow": {"tracking_uri": server, "experiment": "registry", "registered_model": NAME},
        "output_dir": str(files / "runs"),
    }


def aliases(client) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(NAME).aliases.items()}


def test_champion_gate_rollback_and_rest_serving(
    prefect_server, mlflow_server, tiny_backbone, easy_files, finetune_cli, monkeypatch
):
    from flows.finetune import finetune

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = MlflowClient(mlflow_server)

    first = finetune(validate_config(config_dict(tiny_backbone, easy_files, mlflow_server)))
    assert first.gate_passed and first.champion and first.metrics["accuracy"] >= 0.8
    assert aliases(client) == {"champion": "1", "challenger": "1"}
    v1 = client.get_model_version(NAME, "1")
    assert {"data_fingerprint", "config_hash", "git_commit", "backbone", "task"} <= set(v1.tags) and v1.tags[
        "gate"
    ] == "passed"
    assert "**Gate verdict: PASSED**" in v1.description and "| accuracy |" in v1.description
    assert "no champion yet: first version" in v1.description
    review = {a.path for a in client.list_artifacts(first.mlflow_run_id, "review")}
    assert {
        f"review/{f}"
        for f in (
            "confusion_matrix.png",
            "training_curves.png",
            "calibration.png",
            "per_class_report.txt",
            "worst_test_examples.csv",
        )
    } <= review
    assert {"model_card.md", "gates.json", "validation"} <= {a.path for a in client.list_artifacts(first.mlflow_run_id)}

    # A deliberately weaker run: no frozen stage, one epoch at a tiny learning rate. Exit 3.
    weak = easy_files / "weak.yaml"
    weak.write_text(
        yaml.safe_dump(
            config_dict(
                tiny_backbone, easy_files, mlflow_server, strategy="full", unfrozen={"epochs": 1, "learning_rate": 1e-7}
            )
        )
    )
    result = finetune_cli("run", str(weak))
    assert result.returncode == 3, result.stderr
    assert "gates failed" in result.stderr and "vs champion v1" in result.stderr
    v2 = client.get_model_version(NAME, "2")
    assert v2.tags["gate"] == "failed" and "**Gate verdict: FAILED**" in v2.description
    assert aliases(client) == {"champion": "1", "challenger": "2"}
    weak_run = client.get_run(v2.run_id)
    assert weak_run.info.status == "FINISHED" and "champion/accuracy" in weak_run.data.metrics  # champion re-measured

    # As good a run again: no regression, so it takes over; the old champion is recorded.
    third = finetune(validate_config(config_dict(tiny_backbone, easy_files, mlflow_server, seed=7)))
    assert third.gate_passed and aliases(client) == {"champion": "3", "challenger": "3"}
    assert client.get_model_version(NAME, "3").tags["previous_champion"] == "1"

    # Manual rollback with a recorded reason.
    runner = CliRunner()
    rolled = runner.invoke(app, ["promote", NAME, "1", "--reason", "rollback drill", "--tracking-uri", mlflow_server])
    assert rolled.exit_code == 0, rolled.output
    assert aliases(client)["champion"] == "1"
    tags = client.get_model_version(NAME, "1").tags
    assert tags["promotion_reason"] == "rollback drill" and tags["previous_champion"] == "3" and tags["promoted_by"]
    missing = runner.invoke(app, ["promote", NAME, "99", "--reason", "x", "--tracking-uri", mlflow_server])
    assert missing.exit_code == 2 and "no version '99'" in missing.output
    listing = runner.invoke(app, ["models", NAME, "--tracking-uri", mlflow_server])
    assert listing.exit_code == 0 and "champion" in listing.output and "failed" in listing.output

    # The champion loads in process and serves over REST with the same predictions.
    mlflow.set_tracking_uri(mlflow_server)
    texts = ["the film was great", "an awful boring story", "it is the best movie"]
    local = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(pd.DataFrame({"sentence": texts}))
    port = free_port()
    server = start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{NAME}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        f"http://127.0.0.1:{port}/ping",
        easy_files / "serve.log",
        env={
            "MLFLOW_TRACKING_URI": mlflow_server,
            # the scoring server is started as `uvicorn` from PATH: this interpreter's bin first
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
    )
    try:
        body = json.dumps({"dataframe_split": {"columns": ["sentence"], "data": [[t] for t in texts]}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = pd.DataFrame(json.loads(response.read())["predictions"])
    finally:
        stop(server)
    assert served["label"].tolist() == local["label"].tolist()
    pd.testing.assert_frame_equal(served[local.columns], local, check_dtype=False, atol=1e-6)
