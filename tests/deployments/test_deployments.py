"""Deployments end to end on real servers: `prefect server start` and `mlflow server` on free
loopback ports, a process work pool, `prefect deploy` from prefect.yaml, `prefect deployment
run` of the nightly retrain, a worker running it; then the same snapshot again (skipped) and a
second snapshot (a challenger judged by the gates). Also: two runs started together never both
promote."""

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from tests.datasets import easy_sentiment

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _prefect(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def _flow_run(api: str, flow_run_id: str) -> dict:
    with urllib.request.urlopen(f"{api}/flow_runs/{flow_run_id}", timeout=30) as response:
        return json.loads(response.read())


def _snapshot(incoming: Path, name: str, seed: int) -> None:
    folder = incoming / name
    folder.mkdir(parents=True)
    easy_sentiment(160, seed).to_csv(folder / "train.csv", index=False)
    easy_sentiment(60, seed + 100).to_csv(folder / "test.csv", index=False)


def _config(tiny_backbone, tmp_path: Path, tracking_uri: str, model: str, **gates) -> dict:
    return {
        "data": {"train": "unused.csv", "test": "unused.csv"},
        "backbone": {"candidates": [str(tiny_backbone)]},
        "training": {
            "frozen": {"epochs": 2, "learning_rate": 1e-2},
            "unfrozen": {"epochs": 2, "learning_rate": 2e-3, "warmup_ratio": 0.0},
            "batch_size": 16,
            "max_length": 16,
            "precision": "fp32",
            "feature_cache": False,
        },
        "gates": {"beat_baseline": False, **gates},  # plumbing: the tiny model may not learn this data
        "mlflow": {"tracking_uri": tracking_uri, "experiment": "retrain", "registered_model": model},
        "output_dir": str(tmp_path / "runs"),
    }


def test_nightly_retrain_deployment_on_real_servers(prefect_server_process, mlflow_server, tiny_backbone, tmp_path):
    env = {
        **prefect_server_process,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    api = env["PREFECT_API_URL"]
    incoming = tmp_path / "incoming"
    _snapshot(incoming, "2026-11-27", seed=0)
    _prefect(env, "work-pool", "create", "finetune-process", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--name", "nightly-retrain")
    inspected = _prefect(env, "deployment", "inspect", "retrain/nightly-retrain").stdout
    assert "0 2 * * *" in inspected and "Europe/Paris" in inspected

    # The champion's configuration tolerates any regression; the deployment's, given to later
    # runs, trains fewer epochs and asks the impossible: a retrain that used it would fail its gate.
    lenient = _config(tiny_backbone, tmp_path, mlflow_server, "nightly", max_regression={"accuracy": 1.0})
    impossible = _config(tiny_backbone, tmp_path, mlflow_server, "nightly", min={"accuracy": 1.01})
    impossible["training"]["unfrozen"]["epochs"] = 1
    params = json.dumps({"incoming": str(incoming), "config": lenient})

    def run_deployment_and_worker() -> dict:
        created = _prefect(env, "deployment", "run", "retrain/nightly-retrain", "--params", params).stdout
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", created).group(1)
        _prefect(env, "worker", "start", "--pool", "finetune-process", "--run-once", timeout=600)
        return _flow_run(api, flow_run_id)

    client = MlflowClient(mlflow_server)
    first = run_deployment_and_worker()
    assert first["state_type"] == "COMPLETED", first["state"]
    versions = client.search_model_versions("name = 'nightly'")
    assert len(versions) == 1 and versions[0].tags["snapshot"] == "2026-11-27"
    assert {a: str(v) for a, v in client.get_registered_model("nightly").aliases.items()}["champion"] == "1"

    again = run_deployment_and_worker()  # same snapshot: nothing to do
    assert again["state_type"] == "COMPLETED" and len(client.search_model_versions("name = 'nightly'")) == 1

    _snapshot(incoming, "2026-11-28", seed=1)
    params = json.dumps({"incoming": str(incoming), "config": impossible})
    second = run_deployment_and_worker()
    assert second["state_type"] == "COMPLETED", second["state"]
    newest = client.get_model_version("nightly", "2")
    assert newest.tags["snapshot"] == "2026-11-28"
    retrained = client.get_run(newest.run_id).data
    # trained and gated with the champion's recorded configuration, not the deployment's
    assert retrained.params["training.unfrozen.epochs"] == "2" and "gates.min.accuracy" not in retrained.params
    assert newest.tags["gate"] == "passed"
    assert "drift" in newest.tags and "champion/accuracy" in retrained.metrics


def test_two_runs_started_together_never_both_promote(prefect_server, tiny_backbone, tmp_path, tracking_uri):
    from flows.finetune import finetune

    easy_sentiment(160, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(60, 100).to_csv(tmp_path / "test.csv", index=False)
    raw = _config(tiny_backbone, tmp_path, tracking_uri, "race", require_significant=True)
    raw["data"] = {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")}
    results, errors = [], []

    def one_run(index: int):
        try:
            config = validate_config({**raw, "output_dir": str(tmp_path / f"runs-{index}")})
            results.append(finetune(config))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one_run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    promoted = [r for r in results if r.champion]
    assert len(promoted) == 1, [(r.model_version, r.gate_reasons) for r in results]
    loser = next(r for r in results if not r.champion)
    assert any("champion v" in reason or "paired bootstrap" in reason for reason in loser.gate_reasons)
    client = MlflowClient(tracking_uri)
    versions = client.search_model_versions("name = 'race'")
    assert sorted(v.tags["gate"] for v in versions) == ["failed", "passed"]
    # both exported their graph at once: each serves it (an export racing another fell back to PyTorch)
    assert all("Served by default: **onnx-" in v.description for v in versions), [v.description for v in versions]
