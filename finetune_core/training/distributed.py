"""Data-parallel training of the unfrozen stage: torch's DistributedDataParallel, started by
torch's elastic launcher or Ray Train (``training.launcher``).

- ``local``: ``training.num_processes`` workers on this machine through
  ``torch.distributed.launcher.api.elastic_launch`` (a c10d rendezvous on 127.0.0.1);
- ``torchrun``: the stage's arguments go to a file next to its output directory and
  ``torchrun <training.torchrun_args> -m finetune_core.training.worker FILE`` runs it; other nodes
  run the same command (written to ``FILE.command``) and join the c10d rendezvous;
- ``ray``: Ray Train's workers (``ray_launcher``) run the same per-rank code (``run_in_group``).

The backend follows ``training.device``: nccl where it resolves to CUDA (one GPU per local rank),
gloo otherwise. Every rank builds the same length-grouped batch order (same seed) and takes its
share of each global batch, so the global batch stays ``training.batch_size`` for any world size.
DDP averages gradients over ranks, so each rank's mean loss is scaled by ``world * share / batch``:
the average is then the share-weighted sum, exactly the single-process gradient of the whole batch.
Validation runs on every rank (weights are identical, so early-stopping decisions agree);
checkpoints, the saved model and epoch callbacks (MLflow logging) happen on rank 0 only. Every rank
reads the last epoch checkpoint on resume (a multi-node run needs the run directory on shared
storage), so a worker group the agent restarts after a failure (``training.max_restarts``) continues
from the last epoch.

Each worker builds its ``DistContext`` from the environment the launcher sets (RANK,
WORLD_SIZE, LOCAL_RANK; Ray Train's context under ``ray``): no module state says which rank a
process is.
"""

from __future__ import annotations

import os
import pickle
import shlex
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from finetune_core.model.heads import forward_logits
from finetune_core.progress import SILENT, ProgressReporter, relayed
from finetune_core.training.checkpoint import Checkpointer
from finetune_core.training.device import resolve_device

STAGE_FILE_SUFFIX = ".torchrun.pkl"
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> DistContext:
        """The rank the elastic agent gave this process."""
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: np.ndarray) -> np.ndarray:
        return batch[self.rank :: self.world]

    def loss_scale(self, share: int, whole: int) -> float:
        """DDP averages gradients over ranks: scaling each rank's mean loss by world * share / whole
        turns the average into the share-weighted sum, i.e. the gradient of the whole batch's mean."""
        return self.world * share / whole

    def sum_over_ranks(self, *values: float) -> list[float]:
        """Each value summed across ranks (e.g. an epoch's loss total and row count, so rank 0
        reports the loss over the whole epoch, not over its own share)."""
        device = f"cuda:{self.local_rank}" if dist.get_backend() == "nccl" else "cpu"
        totals = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return totals.cpu().tolist()

    def sum_arrays(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Each array summed across ranks, element by element (float64)."""
        device = f"cuda:{self.local_rank}" if dist.get_backend() == "nccl" else "cpu"
        totals = torch.tensor(np.stack([np.asarray(a, dtype=np.float64) for a in arrays]), device=device)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return list(totals.cpu().numpy())

    def parallel(self, network: torch.nn.Module, spec) -> DataParallel:
        return DataParallel(self, network, spec)


class _Logits(torch.nn.Module):
    """``forward_logits`` as a module's forward: DDP prepares its gradient hooks in forward."""

    def __init__(self, network: torch.nn.Module, spec):
        super().__init__()
        self.network, self.spec = network, spec

    def forward(self, inputs: dict) -> torch.Tensor:
        return forward_logits(self.network, self.spec, inputs)


class DataParallel:
    """One rank's DDP-wrapped network: ``forward`` joins the bucketed gradient all-reduce that
    overlaps with backward."""

    def __init__(self, context: DistContext, network: torch.nn.Module, spec):
        self.context = context
        on_gpu = next(network.parameters()).is_cuda
        self.module = torch.nn.parallel.DistributedDataParallel(
            _Logits(network, spec),
            device_ids=[context.local_rank] if on_gpu else None,
            # unused parameters are normal here: the pooler under mean pooling, layers that gradual
            # unfreezing has not reached yet; DDP must not wait for their gradients
            find_unused_parameters=True,
            forward_sync_buffers=False,  # encoders keep no running statistics; ranks' buffers never diverge
        )
        self.shard, self.loss_scale, self.sum_over_ranks = context.shard, context.loss_scale, context.sum_over_ranks

    def forward(self, inputs: dict) -> torch.Tensor:
        return self.module(inputs)


class ReadOnlyCheckpointer(Checkpointer):
    """What ranks other than 0 use: they resume from rank 0's checkpoints and never write them."""

    def save_best(self, model) -> None:
        pass

    def save_epoch(self, progress, model, optimizer, scheduler) -> None:
        pass

    def save_progress(self, progress) -> None:
        pass

    def _remove_unreferenced(self) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backend_for(device: str) -> str:
    """The process group's backend for ``training.device``: nccl where it resolves to CUDA."""
    return "nccl" if resolve_device(device).type == "cuda" else "gloo"


@record  # the worker's traceback goes into the agent's failure report
def run_rank(fn: Callable, kwargs: dict, device: str = "auto") -> None:
    """One worker: join the process group the agent set up (env://), run ``fn(**kwargs, ddp=...)``.
    After a restart by the agent the stage resumes from its last epoch checkpoint. ``device``
    (``training.device``) picks the backend: nccl where the stage trains on CUDA, else gloo (so
    ``device: cpu`` on a GPU machine trains on gloo rather than failing in nccl)."""
    context = DistContext.from_environment()
    use_cuda = backend_for(device) == "nccl"
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    if restart > 0:
        kwargs = {**kwargs, "resume": True}
    # the agent's store outlives a restart: without a prefix per attempt, gloo would read the dead
    # workers' addresses (measured: "Connection refused" to the killed rank's old port)
    store, rank, world = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"finetune/attempt-{restart}", store)
    dist.init_process_group("nccl" if use_cuda else "gloo", store=store, rank=rank, world_size=world)
    try:
        run_in_group(fn, kwargs, context)
    finally:
        dist.destroy_process_group()


def run_in_group(fn: Callable, kwargs: dict, context: DistContext) -> None:
    """What every rank runs once its process group is up, whichever launcher started it (torch's
    elastic agent here, Ray Train in ``ray_launcher``): the same code, so the same losses."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))  # no oversubscription of the cores
    fn(**kwargs, ddp=context)


@contextmanager
def package_first():
    """Workers must import the package this process runs. Loading a logged MLflow model puts its
    code directory (a partial copy of this package: serving only) first on sys.path, which spawned
    children inherit; torchrun's children start from PYTHONPATH."""
    saved_path, saved_env = list(sys.path), os.environ.get("PYTHONPATH")
    sys.path.insert(0, PACKAGE_ROOT)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, saved_env) if p)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        if saved_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_env


def launch_local(processes: int, max_restarts: int, fn: Callable, kwargs: dict, device: str = "auto") -> None:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{_free_port()}",
        max_restarts=max_restarts,
        local_addr="127.0.0.1",
    )
    elastic_launch(config, run_rank)(fn, kwargs, device)


def stage_file(out_dir: Path) -> Path:
    """Where the torchrun launcher leaves a stage's arguments: next to its output directory."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + STAGE_FILE_SUFFIX)


def write_stage_file(path: Path, fn: Callable, kwargs: dict, device: str = "auto") -> Path:
    """The stage as the worker entry point reads it (a pickle: written and read by this package)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps((fn, kwargs, device)))
    return path


def run_stage_file(path: Path) -> None:
    fn, kwargs, device = pickle.loads(Path(path).read_bytes())
    run_rank(fn, kwargs, device)


def torchrun_command(processes: int, max_restarts: int, torchrun_args: list[str], path: Path) -> list[str]:
    """The command every node runs; without ``torchrun_args``, one node (``--standalone``). The
    user's options come after ours, so their ``--max-restarts`` wins; ``$VARS`` in them expand
    here (a Kubernetes pod names its rendezvous endpoint and id in its environment)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={processes}",
        f"--max-restarts={max_restarts}",
        *(os.path.expandvars(arg) for arg in torchrun_args or ["--standalone"]),
        "-m",
        "finetune_core.training.worker",
        str(path),
    ]


def launch_torchrun(training, fn: Callable, kwargs: dict, out_dir: Path) -> None:
    path = write_stage_file(stage_file(out_dir), fn, kwargs, training.device)
    command = torchrun_command(training.num_processes, training.max_restarts, list(training.torchrun_args), path)
    # what the other nodes run; written whole, then renamed: a node polling for the file never
    # reads half a command (a truncated command joins no rendezvous and this node waits for it)
    scratch = path.with_suffix(".command.partial")
    scratch.write_text(shlex.join(command) + "\n")
    scratch.replace(path.with_suffix(".command"))
    with package_first():
        subprocess.run(command, check=True)


def needs_launch(training) -> bool:
    """torchrun and ray launch even one process: other nodes join, or the cluster has the GPUs."""
    return training.launcher != "local" or training.num_processes > 1


def launch(training, fn: Callable, kwargs: dict, out_dir: Path, progress: ProgressReporter = SILENT) -> None:
    """Run ``fn(**kwargs, progress=..., ddp=DistContext)`` on every rank with the launcher
    ``training.launcher`` names and wait for all; what rank 0 saved in ``out_dir`` is the result.
    Workers started here (``local``) report progress to ``progress``; torchrun's do not."""
    if training.launcher == "torchrun":
        launch_torchrun(training, fn, {**kwargs, "progress": SILENT}, out_dir)
        return
    with relayed(progress) as remote, package_first():
        local_kwargs = {**kwargs, "progress": remote}
        launch_local(training.num_processes, training.max_restarts, fn, local_kwargs, training.device)
