"""The unfrozen stage under torchrun's elastic agent (launcher ``torchrun``), on this machine's
loopback: two agents with ``--nnodes=2`` and a c10d rendezvous act as two nodes and give the
single-process losses; a rank killed mid-epoch is restarted by the agent and the run ends with
the metrics of an uninterrupted one."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.training import distributed, frozen_stage, unfrozen_stage
from finetune_core.training.stage_setup import StageInputs
from tests.datasets import easy_sentiment
from tests.training.test_distributed import _config, _without_dropout

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prepared_run(tmp_path, tiny_backbone):
    """Data prepared and the frozen stage trained once, plus the single-process unfrozen result."""
    easy_sentiment(240, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(80, 1).to_csv(tmp_path / "test.csv", index=False)
    backbone = _without_dropout(tiny_backbone, tmp_path / "backbone")
    config = validate_config(_config(tmp_path, backbone, 1))
    prepared = prepare_splits(config, tmp_path / "data")
    frozen_stage.train_frozen(StageInputs(config, prepared, str(backbone), tmp_path / "frozen"))
    single = unfrozen_stage.train_unfrozen(
        StageInputs(config, prepared, tmp_path / "frozen", tmp_path / "model-single")
    )
    return tmp_path, backbone, prepared, single


def _wait_for(condition, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _assert_same_losses(single, other) -> None:
    assert len(single.history) == len(other.history) == single.epochs_run
    for a, b in zip(single.history, other.history, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
        assert a["val_accuracy"] == b["val_accuracy"]


def test_two_torchrun_nodes_on_loopback_match_one_process(prepared_run):
    tmp_path, backbone, prepared, single = prepared_run
    endpoint = f"127.0.0.1:{distributed._free_port()}"
    # join_timeout: if the other node fails to join, this one gives up in 2 minutes, not the default 10
    nodes = ["--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id=loopback"]
    nodes.append("--rdzv-conf=join_timeout=120")
    config = validate_config(
        _config(tmp_path, backbone, 1, launcher="torchrun", torchrun_args=[*nodes, "--local-addr=127.0.0.1"])
    )
    out = tmp_path / "model-nodes"
    command_file = distributed.stage_file(out).with_suffix(".command")
    with ThreadPoolExecutor(1) as pool:  # this "node" runs the stage as the Prefect task would
        first = pool.submit(
            unfrozen_stage.train_unfrozen,
            StageInputs(config, prepared, tmp_path / "frozen", out, checkpoints=tmp_path / "checkpoints"),
        )
        _wait_for(lambda: command_file.is_file() or first.done(), "the stage's torchrun command")
        # the other "node" runs the command the first one wrote, as a second machine would
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        other = subprocess.run(
            shlex.split(command_file.read_text()), env=env, cwd=tmp_path, timeout=600, capture_output=True, text=True
        )
        assert other.returncode == 0, other.stderr[-3000:]  # said at once; the first node then times out
        result = first.result(timeout=600)
    assert result.extra["num_processes"] == 2
    _assert_same_losses(single, result)


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    """The agent's worker processes (the agent's own command line names the worker module too)."""
    found = []
    for process in parent.children(recursive=True):
        try:
            line = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "finetune_core.training.worker" in line and "torch.distributed.run" not in line:
            found.append(process)
    return found


def test_a_killed_rank_is_restarted_and_resumes_from_the_last_epoch(prepared_run):
    tmp_path, backbone, prepared, single = prepared_run
    config = validate_config(_config(tmp_path, backbone, 2, launcher="torchrun", max_restarts=1))
    progress_file = tmp_path / "checkpoints" / "unfrozen" / "progress.json"
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            unfrozen_stage.train_unfrozen,
            StageInputs(
                config, prepared, tmp_path / "frozen", tmp_path / "model", checkpoints=tmp_path / "checkpoints"
            ),
        )
        _wait_for(lambda: progress_file.is_file() or run.done(), "the first epoch's checkpoint")
        assert not run.done()
        assert json.loads(progress_file.read_text())["epoch"] < single.epochs_run  # epochs are still to come
        victims = _workers(psutil.Process())
        assert len(victims) == 2
        victims[-1].send_signal(signal.SIGKILL)  # mid-epoch: the next epoch started with the commit
        result = run.result(timeout=600)
    assert result.resumed_after_epoch >= 1  # the restarted group continued from a checkpoint
    _assert_same_losses(single, result)
    assert abs(result.best_metric - single.best_metric) < 1e-9


def test_worker_entry_point_names_its_usage():
    done = subprocess.run(
        [sys.executable, "-m", "finetune_core.training.worker"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode != 0 and "STAGE_FILE" in done.stderr
