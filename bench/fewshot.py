"""Few labelled examples: our `auto` (contrastive below 50 rows per class) against `lp-ft`.

    python bench/fewshot.py [--per-class 8 16] [--seeds 0 1 2] [--recipes auto lp-ft]

For each size and seed: a seeded class-balanced subset of SST-2 train (``--per-class`` rows of
each label; the default 10 % of it held out for validation), the library's stages on the bundled
all-MiniLM-L6-v2 exactly as the flow runs them (``recipe.resolve`` first), scored on the 872-row
test set. Prints accuracy mean ± std and seconds per recipe and size, and the CPU's model and
flags; writes bench/results/fewshot.json. SetFit is not run here (reduced scope: it needs a
separate venv, kept out of the project's dependencies).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from finetune_core.config.loading import validate_config  # noqa: E402
from finetune_core.data.prepare import prepare_splits  # noqa: E402
from finetune_core.evaluation.test_split import evaluate_model  # noqa: E402
from finetune_core.model.backbone import resolve_backbone  # noqa: E402
from finetune_core.training import recipe, stages  # noqa: E402
from finetune_core.training.contrastive import train_contrastive  # noqa: E402

SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
BACKBONE = "bundled:all-MiniLM-L6-v2"


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = [f for f in fields.get("flags", "").split() if f.startswith(("avx", "amx", "fma"))]
    return f"{fields.get('model name', 'unknown CPU')}, {os.cpu_count()} cores, flags {' '.join(flags)}"


def run(work: Path, per_class: int, seed: int, strategy: str) -> dict:
    read = lambda split: pd.read_csv(SST2 / f"{split}.tsv", sep="\t", quoting=3, keep_default_na=False)  # noqa: E731
    train, test = work / f"train-{per_class}-{seed}.tsv", work / "test.tsv"
    frame = read("train").groupby("label", group_keys=False).sample(n=per_class, random_state=seed)
    frame.to_csv(train, sep="\t", index=False, quoting=3)
    read("test").to_csv(test, sep="\t", index=False, quoting=3)
    config = validate_config(
        {
            "data": {"train": str(train), "test": str(test)},
            "training": {"seed": seed, "feature_cache": False, "strategy": strategy},
        }
    )
    tag = work / f"{strategy}-{per_class}-{seed}"
    started = time.perf_counter()
    prepared = prepare_splits(config, tag / "data")
    config, chosen = recipe.resolve(config, prepared)
    backbone = resolve_backbone(BACKBONE)
    if chosen.strategy == "contrastive":
        train_contrastive(config, prepared, backbone, tag / "tuned")
        backbone = str(tag / "tuned")
    stages.train_frozen(config, prepared, backbone, tag / "frozen")
    stages.train_unfrozen(config, prepared, tag / "frozen", tag / "model")
    stages.calibrate(config, prepared, tag / "model")
    seconds = time.perf_counter() - started
    accuracy = evaluate_model(config, prepared, tag / "model")["accuracy"]
    return {"strategy": chosen.strategy, "accuracy": accuracy, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=["auto", "lp-ft"])
    args = parser.parse_args()
    print(cpu(), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in args.per_class:
            for strategy in args.recipes:
                for seed in args.seeds:
                    row = {"per_class": per_class, "recipe": strategy, "seed": seed}
                    row.update(run(Path(tmp), per_class, seed, strategy))
                    print(json.dumps(row), flush=True)
                    results.append(row)
    print(f"{'per class':>9} {'recipe':>8} {'ran':>12} {'accuracy':>16} {'seconds':>8}")
    for per_class in args.per_class:
        for strategy in args.recipes:
            rows = [r for r in results if r["per_class"] == per_class and r["recipe"] == strategy]
            acc, secs = np.array([r["accuracy"] for r in rows]), np.array([r["seconds"] for r in rows])
            ran = rows[0]["strategy"]
            print(f"{per_class:>9} {strategy:>8} {ran:>12} {acc.mean():>9.4f} ± {acc.std():.4f} {secs.mean():>8.1f}")
    out = REPO / "bench" / "results" / "fewshot.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
