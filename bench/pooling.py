"""Raw mean against unit-length mean under the head, on few-shot SST-2 subsets.

    python -m bench.pooling [--per-class 8 16 64] [--strategies linear-probe lp-ft] [--seeds 0 1 2 3 4]

The same seeded class-balanced rows as bench/fewshot.py (``write_rows``), the library's stages
as the flow runs them (``recipe.resolve`` first), ``backbone.pooling`` set to ``mean`` and to
``normalized-mean`` (what ``auto`` picks for all-MiniLM-L6-v2, whose sentence-transformers
pipeline ends in a Normalize module). Prints test accuracy mean ± std and the paired difference
per size and strategy, with the CPU flags; writes bench/results/pooling/pooling.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench import fewshot  # offline mode and the dataset paths
from bench.machine import cpu_facts, load_average
from bench.paths import RESULTS, invocation
from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.model.backbone import resolve_backbone
from finetune_core.training import frozen_stage, recipe, unfrozen_stage
from finetune_core.training.stage_setup import StageInputs

POOLINGS = ["mean", "normalized-mean"]


def accuracy(work: Path, per_class: int, seed: int, strategy: str, pooling: str) -> float:
    train, test = fewshot.write_rows(work, per_class, seed)
    tag = work / f"{strategy}-{pooling}-{per_class}-{seed}"
    training = {"seed": seed, "feature_cache": False, "strategy": strategy, "precision": "fp32"}
    data = {"train": str(train), "test": str(test), "text_column": "sentence"}
    config = validate_config({"data": data, "backbone": {"pooling": pooling}, "training": training})
    prepared = prepare_splits(config, tag / "data")
    config, _, prepared = recipe.resolve(config, prepared)
    frozen_stage.train_frozen(StageInputs(config, prepared, resolve_backbone(fewshot.BACKBONE), tag / "frozen"))
    final = tag / "frozen"
    if strategy == "lp-ft":
        unfrozen_stage.train_unfrozen(StageInputs(config, prepared, tag / "frozen", tag / "model"))
        final = tag / "model"
    return float(evaluate_model(config, prepared, final)["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--strategies", nargs="+", default=["linear-probe", "lp-ft"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=RESULTS / "pooling" / "pooling.json")
    args = parser.parse_args()
    machine = cpu_facts()
    print(json.dumps(machine), "load", load_average(), flush=True)
    rows, table = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies:
            for per_class in args.per_class:
                scores = {p: [] for p in POOLINGS}
                for seed in args.seeds:
                    for pooling in POOLINGS:
                        acc = accuracy(Path(tmp), per_class, seed, strategy, pooling)
                        scores[pooling].append(acc)
                        row = {"strategy": strategy, "per_class": per_class, "seed": seed, "pooling": pooling}
                        rows.append({**row, "accuracy": acc, "load": load_average()})
                        print(json.dumps(rows[-1]), flush=True)
                gain = np.array(scores["normalized-mean"]) - np.array(scores["mean"])
                table.append(
                    {
                        "strategy": strategy,
                        "per_class": per_class,
                        **{f"{p}_mean": float(np.mean(v)) for p, v in scores.items()},
                        **{f"{p}_std": float(np.std(v)) for p, v in scores.items()},
                        "paired_gain_mean": float(gain.mean()),
                        "paired_gain_std": float(gain.std()),
                    }
                )
                print(json.dumps(table[-1]), flush=True)
    command = invocation("bench.pooling")
    summary = {"cpu": machine, "precision": "fp32", "command": command, "table": table, "results": rows}
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
