"""The tracking server dies mid-run, seen through the installed command: a real `mlflow server` is
SIGKILLed after the first unfrozen epoch is committed, and `finetune run` exits 4 with one error
line naming the server (tests/flows/test_outage.py checks the same in-process, and the registry)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from finetune_core.faults import VARIABLE
from tests.conftest import tiny_config
from tests.datasets import easy_sentiment
from tests.flows.processes import committed_epoch
from tests.flows.test_outage import kill_server
from tests.servers import start_mlflow_server


def test_the_server_killed_mid_run_exits_4_naming_it(prefect_server, tiny_backbone, tmp_path):
    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    easy_sentiment(480, 0).to_csv(files["train"], index=False)
    easy_sentiment(80, 1).to_csv(files["test"], index=False)
    root = tmp_path / "mlflow-server"
    root.mkdir()
    url, server = start_mlflow_server(root)
    raw = tiny_config(tiny_backbone, files, url, tmp_path)
    raw["training"]["unfrozen"] = {"epochs": 4, "learning_rate": 2e-3}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    script = Path(sys.executable).with_name("finetune")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    env = {k: v for k, v in os.environ.items() if k != VARIABLE} | {"PREFECT_API_URL": prefect_server}
    process = subprocess.Popen(
        [*command, "run", str(tmp_path / "config.yaml")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 600
        while committed_epoch(tmp_path / "runs") < 1 and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        kill_server(server)
        assert process.poll() is None, "the run ended before the server was killed"
        _, stderr = process.communicate(timeout=300)
    finally:
        kill_server(server)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 4, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"MLflow tracking server {url} stopped answering" in errors[0], errors
    assert stderr.strip().splitlines()[-1] == errors[0]  # the last word is the error naming the server
