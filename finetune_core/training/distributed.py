"""Data-parallel training of the unfrozen stage over ``training.num_processes`` processes.

torch.distributed with gloo on CPUs (nccl on GPUs, one per rank). Every rank builds the same
length-grouped batch order (same seed) and takes its share of each global batch, so the
global batch size stays `training.batch_size`; each rank's loss is weighted by its share of
the batch and gradients are summed across ranks in one all-reduce per step, which gives
exactly the single-process gradient of the whole batch. Validation runs on every rank (the
weights are identical, so early-stopping decisions agree); checkpoints, the saved model and
epoch callbacks (MLflow logging) happen on rank 0 only.

The launcher hands each worker its ``DistContext`` as the ``ddp`` argument of the function it
runs: no module state says which rank a process is.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: np.ndarray) -> np.ndarray:
        return batch[self.rank :: self.world]

    def sum_over_ranks(self, *values: float) -> list[float]:
        """Each value summed across ranks (e.g. an epoch's loss total and row count, so rank 0
        reports the loss over the whole epoch, not over its own share)."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        totals = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return totals.cpu().tolist()

    def sync_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Sum every gradient across ranks (a missing gradient counts as zeros)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for parameter, grad in zip(parameters, grads):
            size = grad.numel()
            parameter.grad = flat[offset : offset + size].view_as(grad).to(parameter.dtype)
            offset += size


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, threads: int, fn: Callable, args: tuple) -> None:
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl" if use_cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.set_num_threads(threads)
    try:
        fn(*args, ddp=DistContext(rank, world))
    finally:
        dist.destroy_process_group()


def launch(world: int, fn: Callable, args: tuple) -> None:
    """Run ``fn(*args, ddp=DistContext(rank, world))`` on ``world`` processes and wait for all;
    what rank 0 saved is the result."""
    import torch.multiprocessing as mp

    threads = max(1, (os.cpu_count() or world) // world)  # no oversubscription of the cores
    # Spawned workers start from this process's sys.path. Loading a logged MLflow model puts its
    # code directory (a partial copy of this package: serving only) in front; the workers must
    # import the package this process runs, so its root goes first while they start.
    root = str(Path(__file__).resolve().parents[2])
    saved = list(sys.path)
    sys.path.insert(0, root)
    try:
        mp.spawn(_worker, args=(world, _free_port(), threads, fn, args), nprocs=world, join=True)
    finally:
        sys.path[:] = saved
