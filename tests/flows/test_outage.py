"""An MLflow tracking server that is down: before the run (a closed port) and during it (a real
`mlflow server` killed after the first unfrozen epoch). Either way the user gets one error
naming the server's URI after MLflow's bounded retries, and the registry is left as it was."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from tasks.mlflow_io.tracking_server import TrackingUnavailable
from tests.conftest import tiny_config
from tests.datasets import easy_sentiment
from tests.servers import free_port, start_mlflow_server

NAME = "tiny-model"


@pytest.fixture
def easy_files(tmp_path) -> dict[str, Path]:
    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    easy_sentiment(240, 0).to_csv(files["train"], index=False)
    easy_sentiment(80, 1).to_csv(files["test"], index=False)
    return files


def _descendants(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=30).stdout.split()
    return [int(child) for child in children] + [d for child in children for d in _descendants(int(child))]


def kill_server(process: subprocess.Popen) -> None:
    """SIGKILL `mlflow server` and what it started: killed alone, its uvicorn child keeps serving."""
    if process.poll() is not None:
        return
    started = _descendants(process.pid)
    process.kill()
    process.wait(timeout=60)
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _config(backbone: Path, files: dict[str, Path], tracking_uri: str, tmp_path: Path, unfrozen_epochs: int) -> dict:
    """A run the tiny model passes its default gates with (so the first one becomes champion)."""
    raw = tiny_config(backbone, files, tracking_uri, tmp_path)
    raw["backbone"]["pooling"] = "mean"  # the tiny random pooler is nearly constant
    raw["training"].update(
        frozen={"epochs": 2, "learning_rate": 1e-2},
        unfrozen={"epochs": unfrozen_epochs, "learning_rate": 2e-3, "warmup_ratio": 0.0, "layer_lr_decay": 1.0},
        max_length=16,
    )
    return raw


def test_a_closed_port_fails_with_the_uri_named_and_exit_4(finetune_cli, tiny_backbone, easy_files, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    raw = _config(tiny_backbone, easy_files, closed, tmp_path, unfrozen_epochs=1)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))

    result = finetune_cli("run", str(tmp_path / "config.yaml"))
    assert result.returncode == 4, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"MLflow tracking server {closed} is unreachable" in errors[0]
    assert "Connection refused" in errors[0] and "after 4 retries" in errors[0]  # the program's bounded default
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing started: no run directory, no MLflow run


def test_a_server_stopped_mid_run_fails_with_the_uri_named_and_moves_no_alias(
    prefect_server, tiny_backbone, easy_files, tmp_path, monkeypatch
):
    import tasks.train
    from flows.finetune import finetune

    root = tmp_path / "mlflow-server"
    root.mkdir()
    url, server = start_mlflow_server(root)
    try:
        first = finetune(validate_config(_config(tiny_backbone, easy_files, url, tmp_path, unfrozen_epochs=4)))
        assert first.champion and first.model_version == "1"

        real_logger = tasks.train.epoch_logger

        def logger_that_stops_the_server(run_id):
            log = real_logger(run_id)

            def on_epoch_end(stage, epoch, metrics):
                log(stage, epoch, metrics)
                if (stage, epoch) == ("unfrozen", 1):  # the server dies between two unfrozen epochs
                    kill_server(server)

            return on_epoch_end

        monkeypatch.setattr(tasks.train, "epoch_logger", logger_that_stops_the_server)
        second = validate_config(_config(tiny_backbone, easy_files, url, tmp_path, unfrozen_epochs=3))
        with pytest.raises(TrackingUnavailable, match=rf"MLflow tracking server {re.escape(url)} stopped answering"):
            finetune(second)
        monkeypatch.undo()
    finally:
        kill_server(server)

    # The same store served again at the same address: the registry is as the first run left it.
    url, server = start_mlflow_server(root, port=int(url.rsplit(":", 1)[1]))
    try:
        client = MlflowClient(url)
        assert [v.version for v in client.search_model_versions(f"name = '{NAME}'")] == ["1"]
        assert client.get_registered_model(NAME).aliases == {"champion": "1", "challenger": "1"}
        experiment = client.get_experiment_by_name("tests").experiment_id
        (interrupted,) = [r for r in client.search_runs([experiment]) if r.info.run_id != first.mlflow_run_id]
        assert interrupted.info.status == "RUNNING"  # it could not be marked FAILED: the server was gone
        history = client.get_metric_history(interrupted.info.run_id, "unfrozen/val_accuracy")
        assert [m.step for m in history] == [1]
        assert not [m for m in interrupted.data.metrics if m.startswith("test/")]

        # Run again once the server answers: the interrupted run continues where it stopped.
        resumed = finetune(second)
        assert resumed.mlflow_run_id == interrupted.info.run_id
        assert resumed.stages["unfrozen"]["resumed_after_epoch"] >= 1
        history = client.get_metric_history(resumed.mlflow_run_id, "unfrozen/val_accuracy")
        assert [m.step for m in history] == [1, 2, 3]  # epochs finished while the server was down: reported
        assert client.get_run(resumed.mlflow_run_id).info.status == "FINISHED"
        assert sorted(v.version for v in client.search_model_versions(f"name = '{NAME}'")) == ["1", "2"]
    finally:
        kill_server(server)
