"""The unfrozen stage on Ray Train (launcher ``ray``): two Ray workers on the local Ray cluster the
launcher starts by default give the single-process losses, a killed worker is replaced and the
group resumes from the last epoch, the flow logs from rank 0, and no Ray process outlives a run;
without Ray the launcher names the extra to install; the GPU path (nccl) follows training.device."""

import json
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import ray
import torch
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.errors import ConfigError
from finetune_core.training import distributed, frozen_stage, ray_launcher, unfrozen_stage
from finetune_core.training.stage_setup import StageInputs
from tests.datasets import easy_sentiment
from tests.training.test_distributed import _config, _without_dropout
from tests.training.test_torchrun import _assert_same_losses, _wait_for


def _ray_processes(*names: str) -> list[psutil.Process]:
    """Ray's processes started from this one (GCS, raylet, workers: ``ray/...`` programs and
    ``ray::...`` titles) whose command line names one of ``names``."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            line = " ".join(child.cmdline())
            if any(name in line for name in names or ("ray/", "ray::")):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _assert_ray_gone(seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while _ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray.is_initialized()
    assert not _ray_processes(), [p.cmdline()[:3] for p in _ray_processes()]


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
    yield tmp_path, backbone, prepared, single
    if ray.is_initialized():  # only if the launcher failed to shut it down: never leave a cluster behind
        ray.shutdown()


@pytest.mark.integration  # starts a Ray cluster (GCS, raylet, controller, workers): about a minute here
def test_two_ray_workers_on_a_local_cluster_match_one_process(prepared_run):
    tmp_path, backbone, prepared, single = prepared_run
    # the default ray settings: no address, so the launcher starts a local cluster and stops it
    config = validate_config(_config(tmp_path, backbone, 2, launcher="ray"))
    out = tmp_path / "model-ray"
    result = unfrozen_stage.train_unfrozen(
        StageInputs(config, prepared, tmp_path / "frozen", out, checkpoints=tmp_path / "checkpoints")
    )
    assert result.extra["num_processes"] == 2
    _assert_same_losses(single, result)
    assert (tmp_path / "checkpoints" / "unfrozen").is_dir()  # rank 0 checkpointed where the stage expects
    assert (out / "config.json").is_file()  # and saved the model there
    _assert_ray_gone()


@pytest.mark.integration
def test_a_killed_ray_worker_is_restarted_and_resumes_from_the_last_epoch(prepared_run):
    tmp_path, backbone, prepared, single = prepared_run
    config = validate_config(_config(tmp_path, backbone, 2, launcher="ray", max_restarts=1))
    progress_file = tmp_path / "checkpoints" / "unfrozen" / "progress.json"
    with ThreadPoolExecutor(1) as pool:
        frozen, out, checkpoints = tmp_path / "frozen", tmp_path / "model", tmp_path / "checkpoints"
        run = pool.submit(
            unfrozen_stage.train_unfrozen, StageInputs(config, prepared, frozen, out, checkpoints=checkpoints)
        )
        _wait_for(lambda: progress_file.is_file() or run.done(), "the first epoch's checkpoint")
        assert not run.done()
        assert json.loads(progress_file.read_text())["epoch"] < single.epochs_run  # epochs are still to come
        victims = _ray_processes("RayTrainWorker")
        assert len(victims) == 2
        victims[-1].send_signal(signal.SIGKILL)
        result = run.result(timeout=600)
    assert result.resumed_after_epoch >= 1  # Ray's new worker group continued from a checkpoint
    _assert_same_losses(single, result)
    _assert_ray_gone()


def test_ray_settings_are_checked_and_a_missing_ray_names_the_extra(tmp_path, tiny_backbone, monkeypatch):
    with pytest.raises(ConfigError, match="launcher: ray"):
        validate_config(_config(tmp_path, tiny_backbone, 2, ray_address="auto"))
    config = validate_config(_config(tmp_path, tiny_backbone, 1, launcher="ray", ray_address="auto"))
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(ConfigError, match=r"finetune-pipeline\[ray-train\]"):
        ray_launcher.launch(config.training, print, {}, tmp_path / "model")


class _Cluster:
    """What ``uses_gpu`` asks of Ray: the cluster's resources."""

    def __init__(self, **resources):
        self.resources = resources

    def cluster_resources(self) -> dict:
        return self.resources


def test_the_gpu_path_follows_the_device(tmp_path, tiny_backbone):
    """nccl and one GPU per worker only where training.device resolves to CUDA (not run on a GPU
    here: this machine has none, so auto means gloo)."""
    assert distributed.backend_for("cuda") == "nccl"
    assert distributed.backend_for("cpu") == distributed.backend_for("auto") == "gloo"

    def training(device: str):
        raw = _config(tmp_path, tiny_backbone, 2, launcher="ray", device=device)
        return validate_config(raw).training

    gpus, cpus = _Cluster(CPU=8, GPU=2), _Cluster(CPU=8)
    assert ray_launcher.uses_gpu(gpus, training("auto")) and ray_launcher.uses_gpu(cpus, training("cuda"))
    assert not ray_launcher.uses_gpu(cpus, training("auto")) and not ray_launcher.uses_gpu(gpus, training("cpu"))
    assert not ray_launcher.uses_gpu(_Cluster(GPU=1), training("auto"))  # fewer GPUs than workers: CPUs


@pytest.mark.integration
@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has the two GPUs")
def test_cuda_on_a_local_cluster_without_gpus_is_a_config_error_not_a_hang(tmp_path, tiny_backbone):
    config = validate_config(_config(tmp_path, tiny_backbone, 2, launcher="ray", device="cuda"))
    with pytest.raises(ConfigError, match="needs 2 GPUs"):
        ray_launcher.launch(config.training, print, {}, tmp_path / "model")
    _assert_ray_gone()


def test_the_flow_on_ray_logs_each_epoch_once_from_rank_0(prefect_server, tmp_path, tiny_backbone, tracking_uri):
    """The Prefect flow stays the orchestrator: its unfrozen-stage task submits to Ray and waits;
    rank 0, a Ray worker, logs the epochs to MLflow."""
    from flows.finetune import finetune

    easy_sentiment(240, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(80, 1).to_csv(tmp_path / "test.csv", index=False)
    result = finetune(validate_config(_config(tmp_path, tiny_backbone, 2, tracking_uri, launcher="ray")))
    assert result.stages["unfrozen"]["extra"]["num_processes"] == 2 and result.model_version
    history = MlflowClient(tracking_uri).get_metric_history(result.mlflow_run_id, "unfrozen/val_accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4]  # once per epoch: rank 0 only
    _assert_ray_gone()
