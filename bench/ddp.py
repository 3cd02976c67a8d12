"""Training throughput of the data-parallel unfrozen stage on this machine's CPUs (gloo), on a random
BERT (hidden 256, 4 layers) and synthetic sentiment rows, fp32 (the same precision in every run).

    python -m bench.ddp [--variants ...] [--repeats 1] [--rows 2048] [--epochs 2]

Variants, run back to back in one process on the same prepared data and stage-1 model:

- ``1-process``: the stage without a launcher;
- ``2-processes``: launcher ``local``, DDP: gradients all-reduced in buckets while backward runs
  (what the stage does);
- ``2-processes-flat``: the same two processes without DDP: after the whole backward, every
  gradient in one flat tensor and one all-reduce (the behaviour before DDP, rebuilt here only, as
  ``FlatAllReduce``, to measure what the overlap buys);
- ``2-ray-workers``: launcher ``ray`` on a local Ray cluster the launcher starts and stops (its
  wall time includes that).

With ``--repeats 2`` the order is played forwards then backwards, so drift in the machine's load
hits each variant alike. Prints and writes bench/results/ddp/ddp.json: per run the stage's training
samples/s (``StageResult.samples_per_second``: training time only, no validation), the wall
seconds around the stage call (launcher start-up included), the final training loss (the flat
variant must match DDP's: the same arithmetic in another order), the load average before each run;
the CPU model, core count and the flags that matter to torch (avx2, avx512*, amx*). Expect little
from 2 processes on 2 cores: each process then has 1 thread instead of 2 and pays an all-reduce
per step. Nothing asserts timings.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from bench.machine import cpu_facts
from bench.paths import results_file
from finetune_core.model.heads import forward_logits
from finetune_core.training import distributed, frozen_stage, unfrozen_stage
from finetune_core.training.loop import finished_stage
from finetune_core.training.stage_setup import StageInputs

VARIANTS = {  # name: (processes, launcher, gradient exchange)
    "1-process": (1, "local", "none"),
    "2-processes": (2, "local", "ddp-overlap"),
    "2-processes-flat": (2, "local", "flat-after-backward"),
    "2-ray-workers": (2, "ray", "ddp-overlap"),
}


class FlatAllReduce:
    """The gradient exchange before DDP, for comparison only: the plain network; once the whole
    backward has run, all gradients in one flat tensor, one all-reduce, divided by the world size
    (DDP's average, so the stage's loss scaling stays right)."""

    def __init__(self, context: distributed.DistContext, network: torch.nn.Module, spec):
        self.network, self.spec, self.world = network, spec, context.world
        self.shard, self.loss_scale, self.sum_over_ranks = context.shard, context.loss_scale, context.sum_over_ranks

    def forward(self, inputs: dict) -> torch.Tensor:
        outputs = forward_logits(self.network, self.spec, inputs)
        if outputs.requires_grad:  # the logits' gradient comes first in backward: queue the exchange for its end
            outputs.register_hook(self._queue_all_reduce)
        return outputs

    def _queue_all_reduce(self, grad: torch.Tensor) -> torch.Tensor:
        torch.autograd.Variable._execution_engine.queue_callback(self._all_reduce)
        return grad

    def _all_reduce(self) -> None:
        grads = [p.grad for p in self.network.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def train_unfrozen_flat(ddp: distributed.DistContext, inputs: StageInputs):
    """The stage on one rank with ``FlatAllReduce`` in place of DDP (runs in a spawned worker)."""
    ddp.parallel = lambda network, spec: FlatAllReduce(ddp, network, spec)
    return unfrozen_stage.train_unfrozen(inputs, ddp=ddp)


def run_variant(name: str, raw: dict, prepared, frozen: Path, out_dir: Path):
    from finetune_core.config.loading import validate_config

    processes, launcher, exchange = VARIANTS[name]
    config = validate_config({**raw, "training": {**raw["training"], "num_processes": processes, "launcher": launcher}})
    if exchange == "flat-after-backward":
        args = dict(inputs=StageInputs(config, prepared, frozen, out_dir))
        # by its module's name, not __main__'s: the spawned workers import it
        flat = importlib.import_module("bench.ddp").train_unfrozen_flat
        with distributed.package_first():
            distributed.launch_local(processes, 0, flat, args)
        return finished_stage(out_dir, resume=True)
    return unfrozen_stage.train_unfrozen(StageInputs(config, prepared, frozen, out_dir))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()

    from bench.fixtures import build_tiny_bert, easy_sentiment
    from finetune_core.config.loading import validate_config
    from finetune_core.data.prepare import prepare_splits
    from finetune_core.environment import apply_defaults
    from finetune_core.serving.predictor import load_model_dir

    apply_defaults(offline=True)
    results = {"cpu": {**cpu_facts(), "load_average": os.getloadavg()}, "precision": "fp32", "runs": []}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        train = easy_sentiment(args.rows, 0)
        train.to_csv(work / "train.csv", index=False)
        easy_sentiment(64, 1).to_csv(work / "test.csv", index=False)
        backbone = build_tiny_bert(work / "backbone", train["sentence"].tolist(), args.hidden, args.layers)
        raw = {
            "data": {"train": str(work / "train.csv"), "test": str(work / "test.csv")},
            "backbone": {"candidates": [str(backbone)], "pooling": "mean"},
            "training": {
                "frozen": {"epochs": 1},
                "unfrozen": {"epochs": args.epochs},
                "batch_size": 32,
                "max_length": 32,
                "precision": "fp32",
                "feature_cache": False,
            },
            "output_dir": str(work / "runs"),
        }
        config = validate_config(raw)
        prepared = prepare_splits(config, work / "data")  # the same data and stage-1 model for every run
        frozen_stage.train_frozen(StageInputs(config, prepared, str(backbone), work / "frozen"))
        model = load_model_dir(work / "frozen")[0]
        results["gradient_megabytes"] = round(sum(p.numel() for p in model.parameters()) * 4 / 2**20, 1)  # fp32
        order = [v for i in range(args.repeats) for v in (args.variants if i % 2 == 0 else args.variants[::-1])]
        for index, name in enumerate(order):
            load = os.getloadavg()
            started = time.perf_counter()
            result = run_variant(name, raw, prepared, work / "frozen", work / f"model-{index}")
            processes, launcher, exchange = VARIANTS[name]
            run = {
                "variant": name,
                "processes": processes,
                "launcher": launcher,
                "gradient_exchange": exchange,
                # workers take cores // local processes (distributed.run_in_group); one process, torch's default
                "threads_per_process": torch.get_num_threads() if processes == 1 else os.cpu_count() // processes,
                "samples_per_second": round(result.samples_per_second, 1),
                "train_seconds": round(result.train_seconds, 2),
                "wall_seconds": round(time.perf_counter() - started, 2),
                "final_train_loss": result.history[-1]["train_loss"],
                "load_average_before": [round(x, 2) for x in load],
            }
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
    speed = {
        name: statistics.median(r["samples_per_second"] for r in results["runs"] if r["variant"] == name)
        for name in dict.fromkeys(order)
    }
    ratios = {}
    if "1-process" in speed and "2-processes" in speed:
        ratios["2_processes_over_1"] = round(speed["2-processes"] / speed["1-process"], 3)
    if "2-processes" in speed and "2-processes-flat" in speed:
        ratios["ddp_overlap_over_flat_allreduce"] = round(speed["2-processes"] / speed["2-processes-flat"], 3)
    if "2-ray-workers" in speed and "2-processes" in speed:
        ratios["ray_over_local_launcher"] = round(speed["2-ray-workers"] / speed["2-processes"], 3)
    results.update(median_samples_per_second=speed, ratios=ratios, load_average_after=os.getloadavg())
    out = results_file("ddp", "ddp.json")
    out.write_text(json.dumps({**results, "args": vars(args)}, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "cpu": results["cpu"]}))


if __name__ == "__main__":
    main()
