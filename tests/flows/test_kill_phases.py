"""A crash anywhere resumes. The installed `finetune run` kills itself with a real SIGKILL at a named
phase (``FINETUNE_FAULT_KILL_AT``, finetune_core/faults.py); the same command is run again, killed
at the next phase, and so on; the last run completes. Then: the run finished in its one run
directory and its one MLflow run; one logged model; exactly one registered version, whose run_id is that run's; the
aliases where the gates put them; no half-written cache file left or read; the test metrics equal an
uninterrupted run's (computed once per module).

Phases are chained (each kill is a real one of its own process, asserted by its exit status) so the
file stays affordable on 2 cores: a run from scratch up to training, then one that has trained.

The kill at ``registered`` dies holding the registry lock (a Prefect global concurrency slot). A real
Prefect server revokes its lease after tasks/register.py REGISTRY_LEASE_SECONDS; the tests' ephemeral
server runs no such service, so the test frees the slot as an operator would
(`prefect gcl update NAME --active-slots 0`)."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from mlflow import MlflowClient

from finetune_core.durable import verified_cache
from tests.conftest import tiny_config
from tests.datasets import easy_sentiment
from tests.flows.processes import run_config

NAME = "kill-phases-model"  # its own registry lock: a kill holding it delays no other test
CHAINS = {
    "selection-to-frozen-result": ["selection", "features", "layer-cache", "stage-result:frozen"],
    "model-to-alias": ["logged-model", "review-files", "registered"],
}


def _raw_config(backbones: list[Path], data: Path, tracking_uri: str, out: Path) -> dict:
    files = {"train": data / "train.csv", "test": data / "test.csv"}
    raw = tiny_config(backbones[0], files, tracking_uri, out)
    raw["mlflow"]["registered_model"] = NAME
    raw["backbone"].update(candidates=[str(b) for b in backbones], pooling="mean", selection_sample=100)
    raw["training"].update(
        frozen={"epochs": 2, "learning_rate": 1e-2},
        # the lowest block frozen: the frozen stage fills the layer cache beside the feature cache
        unfrozen={"epochs": 1, "learning_rate": 2e-3, "warmup_ratio": 0.0, "freeze_layers": 1},
        max_length=16,
        cache_dir=str(out / "feature-cache"),  # this test's caches: a kill must find them to write
    )
    return raw


@pytest.fixture(scope="module")
def data_and_backbones(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("kill-phases-data")
    easy_sentiment(240, 0).to_csv(root / "train.csv", index=False)
    easy_sentiment(80, 1).to_csv(root / "test.csv", index=False)
    second = shutil.copytree(tiny_backbone, root / "second-backbone")  # two candidates: selection runs
    return root, [tiny_backbone, second]


@pytest.fixture(scope="module")
def uninterrupted(prefect_server, data_and_backbones, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("kill-phases-reference")
    data, backbones = data_and_backbones
    raw = _raw_config(backbones, data, f"sqlite:///{out / 'mlflow.db'}", out)
    result, summary = run_config(prefect_server, out, raw)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(summary.read_text())


def _free_registry_lock() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from tasks.register import registry_lock_name

    with get_client(sync_client=True) as client:
        name = registry_lock_name(NAME)
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 1  # the dead run's
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))


def _no_half_cache_left(cache_dir: Path) -> None:
    assert not list(cache_dir.glob(".*.tmp")), "a dead writer's temporary file was left"
    for path in cache_dir.glob("*.npy"):
        with verified_cache(path) as whole:
            assert whole, f"{path.name} does not match its index"


@pytest.mark.parametrize("chain", list(CHAINS), ids=list(CHAINS))
def test_killed_at_each_phase_the_same_command_finishes_as_if_uninterrupted(
    chain, uninterrupted, data_and_backbones, prefect_server, tmp_path
):
    data, backbones = data_and_backbones
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = _raw_config(backbones, data, tracking_uri, tmp_path)
    for phase in CHAINS[chain]:
        killed, _ = run_config(prefect_server, tmp_path, raw, kill_at=phase)
        assert killed.returncode == -signal.SIGKILL, f"not killed at {phase}: {killed.stderr[-3000:]}"
        if phase in ("features", "layer-cache"):  # killed holding a half-written cache file
            assert list((tmp_path / "feature-cache").glob(".*.tmp")), phase
        if phase == "registered":
            _free_registry_lock()
    (run_dir,) = (tmp_path / "runs").iterdir()
    run_id = json.loads((run_dir / "run.json").read_text())["mlflow_run_id"]

    result, summary_file = run_config(prefect_server, tmp_path, raw)
    assert result.returncode in (0, 3), result.stderr[-3000:]  # 3: finished, the gates rejected it
    summary = json.loads(summary_file.read_text())
    assert summary["run_dir"] == str(run_dir) and summary["mlflow_run_id"] == run_id
    assert summary["metrics"] == uninterrupted["metrics"]
    assert summary["gate_passed"] == uninterrupted["gate_passed"]
    _no_half_cache_left(tmp_path / "feature-cache")

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tests").experiment_id
    runs = client.search_runs([experiment])  # the run, and its candidates' child runs
    assert [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    logged = client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
    assert [m.model_uri for m in logged] == [summary["model_uri"]]  # a resumed run does not log it again
    (version,) = client.search_model_versions(f"name = '{NAME}'")
    number = str(version.version)
    assert version.run_id == run_id and number == summary["model_version"]
    aliases = {"challenger": number} | ({"champion": number} if summary["gate_passed"] else {})
    assert {alias: str(v) for alias, v in client.get_registered_model(NAME).aliases.items()} == aliases
