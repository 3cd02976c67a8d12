"""A real kill: `finetune run` in its own process, killed with SIGKILL in the middle of an
unfrozen epoch, then `finetune run --resume RUN_DIR` ends with the same weights and metrics as
an uninterrupted run (which, the first run being finished, starts in a new directory)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import tiny_config
from tests.datasets import easy_sentiment
from tests.flows.processes import committed_epoch


def _finetune_command() -> list[str]:
    script = Path(sys.executable).with_name("finetune")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(
    prefect_server, tiny_backbone, tracking_uri, tmp_path
):
    easy_sentiment(2400, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(120, 1).to_csv(tmp_path / "test.csv", index=False)
    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    raw = tiny_config(tiny_backbone, files, tracking_uri, tmp_path)
    raw["training"]["unfrozen"] = {"epochs": 3, "learning_rate": 2e-3}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    runs = tmp_path / "runs"

    process = subprocess.Popen(
        [*_finetune_command(), "run", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while committed_epoch(runs) < 1 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed_after = committed_epoch(runs)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert 1 <= killed_after < 3, "killed before the first or after the last unfrozen epoch"
    (run_dir,) = runs.iterdir()

    def finetune_run(*args: str) -> dict:
        summary = tmp_path / f"summary-{len(list(tmp_path.glob('summary-*')))}.json"
        done = subprocess.run(
            [*_finetune_command(), "run", str(config), "--summary-json", str(summary), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(summary.read_text())

    resumed = finetune_run("--resume", str(run_dir))
    assert resumed["run_dir"] == str(run_dir)
    assert resumed["stages"]["unfrozen"]["resumed_after_epoch"] == killed_after

    straight = finetune_run()  # the same work again: finished, so a fresh uninterrupted run
    assert straight["run_dir"] != str(run_dir) and straight["stages"]["unfrozen"]["resumed_after_epoch"] == 0
    assert straight["metrics"] == resumed["metrics"]
    ours = load_file(Path(resumed["run_dir"]) / "model" / "model.safetensors")
    theirs = load_file(Path(straight["run_dir"]) / "model" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
