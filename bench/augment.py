"""Does EDA augmentation help on a small SST-2 subset? Paired runs, several seeds.

    python -m bench.augment [--rows 500] [--seeds 0 1 2] [--copies 1 2]

For each seed: a seeded ``--rows`` subset of SST-2 train (10 % held out for validation), the
default two-stage recipe on the bundled all-MiniLM-L6-v2, once without augmentation and once
per ``--copies`` value with EDA swap/deletion (no offline synonym source ships here), scored
on the 872-row test set. Prints accuracies and the paired differences; writes
bench/results/augmentation/augment.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np
import pandas as pd

from bench.paths import REPO, results_file
from finetune_core.augmentation.eda import augment_prepared
from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.model.backbone import resolve_backbone
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.stage_setup import StageInputs

SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
BACKBONE = "bundled:all-MiniLM-L6-v2"


def run(work: Path, seed: int, rows: int, copies: int) -> float:
    read = lambda split: pd.read_csv(SST2 / f"{split}.tsv", sep="\t", quoting=3, keep_default_na=False)  # noqa: E731
    train, test = work / f"train-{seed}.tsv", work / "test.tsv"
    read("train").sample(n=rows, random_state=seed).to_csv(train, sep="\t", index=False, quoting=3)
    read("test").to_csv(test, sep="\t", index=False, quoting=3)
    config = validate_config(
        {
            "data": {"train": str(train), "test": str(test)},
            "training": {"seed": seed, "feature_cache": False},
            "augmentation": {"enabled": copies > 0, "copies_per_example": max(copies, 1)},
        }
    )
    tag = work / f"s{seed}-c{copies}"
    prepared = prepare_splits(config, tag / "data")
    if copies:
        prepared, _ = augment_prepared(config, prepared)
    frozen_stage.train_frozen(StageInputs(config, prepared, resolve_backbone(BACKBONE), tag / "frozen"))
    unfrozen_stage.train_unfrozen(StageInputs(config, prepared, tag / "frozen", tag / "model"))
    return evaluate_model(config, prepared, tag / "model")["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    accuracy: dict[str, list[float]] = {"none": []} | {f"eda x{c}": [] for c in args.copies}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            accuracy["none"].append(run(Path(tmp), seed, args.rows, 0))
            for copies in args.copies:
                accuracy[f"eda x{copies}"].append(run(Path(tmp), seed, args.rows, copies))
            print(json.dumps({k: v[-1] for k, v in accuracy.items()}), flush=True)
    base = np.array(accuracy["none"])
    result = {
        "rows": args.rows,
        "seeds": args.seeds,
        "accuracy": accuracy,
        "mean": {k: float(np.mean(v)) for k, v in accuracy.items()},
        "paired_gain_points": {
            k: [round(100 * d, 2) for d in np.array(v) - base] for k, v in accuracy.items() if k != "none"
        },
    }
    print(json.dumps(result, indent=1))
    results_file("augmentation", "augment.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
