"""Training throughput of the unfrozen stage with 1 and with N DDP processes (launcher ``local``)
on this machine's CPUs, on a random BERT (hidden 256, 4 layers) and synthetic sentiment rows.

    python bench/ddp.py [--processes 1 2] [--rows 2048] [--epochs 2] [--hidden 256] [--layers 4]

Prints and writes bench/results/ddp.json: per process count the stage's training samples/s
(``StageResult.samples_per_second``: training time only, no validation) and wall seconds, with
the CPU model, core count, the CPU flags that matter to torch (avx2, avx512*, amx*) and the load
average (the machine may be shared). Expect little from 2 processes on 2 cores: each process then
has 1 thread instead of 2 and pays an all-reduce per step. Nothing asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cpu_facts() -> dict:
    model, flags = platform.processor(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        all_flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
        flags = sorted(f for f in all_flags if f == "avx2" or f.startswith(("avx512", "amx")))
    except (OSError, StopIteration):
        pass
    return {"model": model, "cores": os.cpu_count(), "flags": flags, "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()

    from finetune_core.config.loading import validate_config
    from finetune_core.data.prepare import prepare_splits
    from finetune_core.training import stages
    from tests.datasets import easy_sentiment
    from tests.tiny_models import build_tiny_bert

    results = {"cpu": cpu_facts(), "runs": []}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        train = easy_sentiment(args.rows, 0)
        train.to_csv(work / "train.csv", index=False)
        easy_sentiment(64, 1).to_csv(work / "test.csv", index=False)
        backbone = build_tiny_bert(work / "backbone", train["sentence"].tolist(), args.hidden, args.layers)
        for processes in args.processes:
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
                    "num_processes": processes,
                },
                "output_dir": str(work / "runs"),
            }
            config = validate_config(raw)
            prepared = prepare_splits(config, work / f"data-{processes}")
            stages.train_frozen(config, prepared, str(backbone), work / f"frozen-{processes}")
            result = stages.train_unfrozen(config, prepared, work / f"frozen-{processes}", work / f"model-{processes}")
            run = {
                "processes": processes,
                "samples_per_second": round(result.samples_per_second, 1),
                "train_seconds": round(result.train_seconds, 2),
                "wall_seconds": round(result.wall_seconds, 2),
                "final_train_loss": result.history[-1]["train_loss"],
            }
            print(json.dumps(run))
            results["runs"].append(run)
    out = REPO / "bench" / "results" / "ddp.json"
    out.write_text(json.dumps({**results, "args": vars(args)}, indent=2))
    print(json.dumps(results["cpu"]))


if __name__ == "__main__":
    main()
