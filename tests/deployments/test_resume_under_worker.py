"""A crash in a deployment loses no finished epoch: the `finetune` deployment runs under a real
`prefect worker`; its flow-run process is killed with SIGKILL in the middle of the unfrozen
stage; the same deployment run again continues the unfinished run (same MLflow run, finished
epochs not trained again) and ends with the metrics of an uninterrupted run."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from tests.datasets import easy_sentiment

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _prefect(env, *args, timeout=300):
    done = subprocess.run(
        [str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _flow_run_process(flow_run_id: str) -> int | None:
    """The pid of the process running ``flow_run_id`` (the worker starts it with the id in its
    environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ:
            return int(entry.name)
    return None


def _committed_epoch(run_root: Path, stage: str) -> int:
    state = next(run_root.glob(f"*/checkpoints/{stage}/state.pt"), None)
    if state is None:
        return 0
    try:
        return torch.load(state, weights_only=False)["progress"]["epoch"]
    except Exception:  # being replaced right now
        return 0


def _config(tiny_backbone, data: Path, runs: Path, tracking_uri: str) -> dict:
    return {
        "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv")},
        "backbone": {"candidates": [str(tiny_backbone)]},
        "training": {
            "frozen": {"epochs": 1, "learning_rate": 1e-2},
            "unfrozen": {"epochs": 3, "learning_rate": 2e-3, "warmup_ratio": 0.0},
            "batch_size": 16,
            "max_length": 32,
            "precision": "fp32",
        },
        "mlflow": {"tracking_uri": tracking_uri, "experiment": "resume", "registered_model": "resumed"},
        "output_dir": str(runs),
    }


def test_a_killed_deployment_run_continues_when_run_again(prefect_server_process, tiny_backbone, tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    easy_sentiment(3000, 0).to_csv(data / "train.csv", index=False)  # unfrozen epochs of a few seconds
    easy_sentiment(200, 1).to_csv(data / "test.csv", index=False)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**prefect_server_process, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    _prefect(env, "work-pool", "create", "finetune-process", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--name", "finetune")
    params = json.dumps({"config": _config(tiny_backbone, data, runs, tracking_uri)})

    def run_once(kill_during_unfrozen: bool) -> tuple[str, int, str]:
        created = _prefect(env, "deployment", "run", "finetune/finetune", "--params", params).stdout
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", created).group(1)
        killed_after = []

        def kill_once_an_unfrozen_epoch_is_committed():
            deadline = time.time() + 900
            while time.time() < deadline:
                epoch = _committed_epoch(runs, "unfrozen")
                if 1 <= epoch < 3 and (pid := _flow_run_process(flow_run_id)):
                    os.kill(pid, signal.SIGKILL)
                    killed_after.append(epoch)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_once_an_unfrozen_epoch_is_committed, daemon=True)
        if kill_during_unfrozen:
            killer.start()
        worker = _prefect(env, "worker", "start", "--pool", "finetune-process", "--run-once", timeout=900)
        if kill_during_unfrozen:
            killer.join(timeout=5)
        return flow_run_id, (killed_after[0] if killed_after else 0), worker.stdout + worker.stderr

    _, killed_after, log = run_once(kill_during_unfrozen=True)
    assert killed_after >= 1, f"not killed mid unfrozen stage; the worker said:\n{log[-4000:]}"
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("resume").experiment_id
    (crashed,) = client.search_runs([experiment])
    assert crashed.info.status == "RUNNING"  # killed: nobody marked it
    assert client.search_registered_models() == []

    _, _, log = run_once(kill_during_unfrozen=False)  # the same deployment, the same data
    (resumed,) = client.search_runs([experiment])
    assert resumed.info.status == "FINISHED", log[-4000:]
    assert resumed.info.run_id == crashed.info.run_id and resumed.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "unfrozen/val_accuracy")]
    assert steps == sorted(set(steps)) and steps[-1] == 3  # no epoch logged twice
    (run_dir,) = runs.iterdir()
    unfrozen = json.loads((run_dir / "model" / "stage_result.json").read_text())
    assert unfrozen["resumed_after_epoch"] == killed_after  # finished epochs were not trained again

    run_once(kill_during_unfrozen=False)  # finished: the same work again is a fresh, uninterrupted run
    straight, resumed = sorted(client.search_runs([experiment]), key=lambda r: r.info.start_time, reverse=True)
    assert straight.info.run_id != resumed.info.run_id
    test_metrics = {k: v for k, v in resumed.data.metrics.items() if k.startswith("test/")}
    assert test_metrics and test_metrics == {k: straight.data.metrics[k] for k in test_metrics}
