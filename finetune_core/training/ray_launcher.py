"""The ``ray`` launcher: the data-parallel unfrozen stage as a Ray Train ``TorchTrainer``, for teams
that train on Ray. The Prefect flow stays the orchestrator: the stage's task submits the trainer
and waits for it, as it waits for the other launchers.

- ``training.ray_address`` unset: a local Ray cluster is started for the stage (this machine's
  cores, no dashboard, a small object store: only the stage's arguments pass through it, the data
  is read from the run directory) and shut down after it. ``auto``: the cluster ``RAY_ADDRESS``
  (or ``ray start`` on this machine) names; else the head's ``HOST:6379``. A Ray session this
  process already holds is used as it is and left open.
- ``training.num_processes`` Ray Train workers in all, placed by Ray on the cluster's nodes. With
  ``training.device: cuda`` (or ``auto`` on a cluster with that many GPUs) each worker gets one GPU
  and Ray joins them with nccl; otherwise gloo on CPUs. Once Ray has set up the process group,
  each worker runs the per-rank code of the other launchers (``distributed.run_in_group``), so the
  losses are theirs.
- Rank 0 writes checkpoints, the model and the epoch callbacks where the stage expects them: on a
  cluster of several nodes the run directory must be on storage every node mounts at the same path
  (as for torchrun), and each node needs this package installed with the ``ray-train`` extra.
- ``training.max_restarts``: Ray starts a failed worker group again that many times; the new group
  resumes from the last epoch checkpoint (rank 0 marks the first attempt in a file next to the
  output directory, so a later attempt knows it is one).

Ray is imported only when this launcher runs: ``finetune_core`` imports without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from finetune_core.errors import ConfigError
from finetune_core.progress import SILENT, ProgressReporter

if TYPE_CHECKING:
    from finetune_core.training.distributed import DistContext

# torch and the per-rank code are imported where they run: every process of a local cluster
# imports this module (its setup hook), and most of them (Ray Train's controller and helpers)
# never train.

# Only the stage's arguments (configuration, paths) travel through the object store; Ray's
# minimum is 75 MiB, its default 30% of memory would be reserved for nothing.
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20
ATTEMPT_FILE_SUFFIX = ".ray-attempt"
PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def import_ray():
    """Ray, with Ray Train's torch support; without them, what to install."""
    try:
        import ray
        import ray.train.torch  # noqa: F401
    except ImportError as error:
        raise ConfigError(
            "training.launcher: ray needs Ray Train, which is not installed: pip install 'finetune-pipeline[ray-train]'"
        ) from error
    return ray


def attempt_file(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ATTEMPT_FILE_SUFFIX)


@contextmanager
def ray_session(ray, address: str | None, processes: int) -> Iterator[None]:
    """Connected to the cluster ``address`` names (unset: a new local one) for the ``with`` block."""
    if ray.is_initialized():
        yield
        return
    if address is None:
        # address="local": a new cluster even where RAY_ADDRESS is set (ray.init(None) would join it)
        ray.init(
            address="local",
            num_cpus=max(os.cpu_count() or 1, processes),
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            runtime_env={"worker_process_setup_hook": f"{__name__}.quiet_without_dashboard"},
        )
    else:
        ray.init(address=address)
    try:
        yield
    finally:
        ray.shutdown()


def quiet_without_dashboard() -> None:
    """Run in each process of a local cluster: Ray Train's placement-group cleaner asks the State
    API (served by the dashboard, which a local cluster here lacks) every second whether the
    controller lives, and warns each time it cannot; its clean-up ends with the cluster anyway."""
    logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).setLevel(logging.ERROR)


def uses_gpu(ray, training) -> bool:
    """One GPU per worker with device cuda, or with auto where the cluster has enough of them."""
    if training.device == "cuda":
        return True
    return training.device == "auto" and ray.cluster_resources().get("GPU", 0) >= training.num_processes


def _is_restart(marker: Path, context: DistContext) -> bool:
    """Rank 0 marks the first attempt; a worker group Ray starts again finds the mark (all ranks
    take rank 0's answer, whatever storage they see)."""
    import torch.distributed as dist

    answer = [marker.exists()] if context.is_main else [None]
    if context.is_main and not answer[0]:
        marker.touch()
    dist.broadcast_object_list(answer, src=0)
    return bool(answer[0])


def train_worker(payload: dict) -> None:
    """One Ray Train worker; Ray has set up the process group and RANK/WORLD_SIZE/LOCAL_RANK."""
    import ray.train
    import ray.train.torch
    import torch

    from finetune_core.training.distributed import DistContext, run_in_group

    if Path(payload["cwd"]).is_dir():  # relative run paths mean the driver's directory (shared storage)
        os.chdir(payload["cwd"])
    info = ray.train.get_context()
    device = ray.train.torch.get_device()
    local_rank = info.get_local_rank()
    if device.type == "cuda":
        # Ray need not hand a worker the GPU at index LOCAL_RANK; the stage picks cuda:LOCAL_RANK
        torch.cuda.set_device(device)
        local_rank = device.index
        os.environ["LOCAL_RANK"] = str(local_rank)
    context = DistContext(info.get_world_rank(), info.get_world_size(), local_rank)
    kwargs = payload["kwargs"]
    if _is_restart(Path(payload["attempts"]), context):
        kwargs = {**kwargs, "resume": True}
    run_in_group(payload["fn"], kwargs, context)


def launch(training, fn: Callable, kwargs: dict, out_dir: Path, progress: ProgressReporter = SILENT) -> None:
    """Run ``fn(**kwargs, ddp=DistContext)`` on ``training.num_processes`` Ray Train workers and
    wait; what rank 0 saved in ``out_dir`` is the result. Ray's workers report no progress here."""
    ray = import_ray()
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from finetune_core.training.distributed import package_first

    out_dir = Path(out_dir).absolute()
    marker = attempt_file(out_dir)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # a new launch: its first attempt is not a restart
    payload = {"fn": fn, "kwargs": {**kwargs, "progress": SILENT}, "attempts": str(marker), "cwd": os.getcwd()}
    with package_first(), ray_session(ray, training.ray_address, training.num_processes):
        use_gpu = uses_gpu(ray, training)
        gpus = ray.cluster_resources().get("GPU", 0)
        if use_gpu and training.ray_address is None and gpus < training.num_processes:
            # a local cluster never grows: Ray would wait for the GPUs forever
            raise ConfigError(
                f"training.device: cuda with launcher ray needs {training.num_processes} GPUs "
                f"(training.num_processes); the local Ray cluster has {gpus:g}"
            )
        trainer = TorchTrainer(
            train_worker,
            train_loop_config=payload,
            scaling_config=ScalingConfig(num_workers=training.num_processes, use_gpu=use_gpu),
            run_config=RunConfig(
                name=out_dir.name + ".ray",  # Ray Train's own run state, next to the model directory
                storage_path=str(out_dir.parent),
                failure_config=FailureConfig(max_failures=training.max_restarts),
            ),
        )
        trainer.fit()
