"""Training-engine benchmarks against Hugging Face Trainer, back to back in one process.

    python -m bench.engine throughput   # (a) unfrozen-stage samples/s vs Trainer, (e) FLOP/s vs matmul peak
    python -m bench.engine frozen       # (b) frozen-stage cost per extra epoch: cached features vs forward passes
    python -m bench.engine budget       # (c) test accuracy after an equal wall-clock budget (bench/engine_budget.py)
    python -m bench.engine full         # (d) the default recipe on the full SST-2 training set
    python -m bench.engine freeze       # stage 2 with freeze_layers N = 0..L, three seeds (bench/engine_freeze.py)

Data: ../shared/data/sst2 (or SST2_DIR); model: the bundled all-MiniLM-L6-v2. Prints figures and
ratios, writes bench/results/<experiment>/<name>.json (see EXPERIMENT); asserts no timing.
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
import numpy as np
import pandas as pd
import torch

from bench.engine_budget import budget
from bench.engine_freeze import freeze_table
from bench.hf_baseline import hf_train
from bench.machine import machine
from bench.paths import REPO, invocation, results_file
from bench.settings import engine_switches, merged
from bench.timing import matmul_flops
from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.model.backbone import resolve_backbone
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.stage_setup import StageInputs

SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
EXPERIMENT = {
    "throughput": "engine-first-targets",
    "frozen": "engine-first-targets",
    "budget": "equal-wall-clock",
    "full": "full-train-set",
    "freeze": "stage2-throughput",
}
BACKBONE = "bundled:all-MiniLM-L6-v2"


def sst2_files(workdir: Path, train_rows: int | None) -> dict[str, Path]:
    read = lambda split: pd.read_csv(SST2 / f"{split}.tsv", sep="\t", quoting=3, keep_default_na=False)  # noqa: E731
    train = read("train")
    if train_rows:
        train = train.sample(n=train_rows, random_state=0)
    files = {"train": workdir / "train.tsv", "test": workdir / "test.tsv"}
    train.to_csv(files["train"], sep="\t", index=False, quoting=3)
    read("test").to_csv(files["test"], sep="\t", index=False, quoting=3)
    return files


def our_config(files, **training) -> object:
    base = {"batch_size": 32, "max_length": 128, "seed": 42, "cache_dir": None, "feature_cache": False}
    base = engine_switches(merged(base, training))  # token_rows: all, masks: the engine's, not keys
    return validate_config(
        {
            "data": {"train": str(files["train"]), "test": str(files["test"])},
            "backbone": {"candidates": [BACKBONE]},
            "training": base,
        }
    )


def run_ours(config, workdir: Path, tag: str) -> dict:
    prepared = prepare_splits(config, workdir / f"{tag}-data")
    backbone = resolve_backbone(BACKBONE)
    started = time.perf_counter()
    frozen = frozen_stage.train_frozen(StageInputs(config, prepared, backbone, workdir / f"{tag}-frozen"))
    unfrozen = unfrozen_stage.train_unfrozen(
        StageInputs(config, prepared, workdir / f"{tag}-frozen", workdir / f"{tag}-model")
    )
    seconds = time.perf_counter() - started
    metrics = evaluate_model(config, prepared, workdir / f"{tag}-model")
    return {
        "frozen": frozen.as_dict(),
        "unfrozen": unfrozen.as_dict(),
        "seconds": seconds,
        "accuracy": metrics["accuracy"],
        "rows": prepared.rows,
    }


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    return matmul_flops(dtype, size, repeats, warmup=1)


def training_flops(lengths: np.ndarray, config) -> float:
    """Useful training FLOPs (forward + backward ≈ 3 × forward) over real tokens, no padding."""
    layers, hidden, intermediate = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    per_token = 2 * layers * (4 * hidden * hidden + 2 * hidden * intermediate)  # dense matmuls, forward
    attention = 2 * layers * 2 * hidden * (lengths.astype(np.float64) ** 2)  # QK^T and AV, forward
    return float(3 * (per_token * lengths.sum() + attention.sum()))


def throughput(workdir: Path) -> dict:
    files = sst2_files(workdir, 2000)
    results = {"setup": f"2,000 SST-2 rows, batch 32, max length 128, 1 epoch, threads {torch.get_num_threads()}"}
    for name, kwargs in {
        "hf_padded": dict(padding="max_length"),
        "hf_dynamic": dict(padding="dynamic"),
        "hf_grouped": dict(padding="dynamic", group_by_length=True),
        "hf_grouped_bf16": dict(padding="dynamic", group_by_length=True, bf16=True),
    }.items():
        results[name] = hf_train(files, BACKBONE, epochs=1, **kwargs)
        print(
            f"{name:>18}: {results[name]['samples_per_second']:7.1f} samples/s  "
            f"accuracy {results[name]['accuracy']:.4f}",
            flush=True,
        )
    for precision in ("fp32", "bf16"):
        config = our_config(files, strategy="full", precision=precision, unfrozen={"epochs": 1, "learning_rate": 5e-5})
        run = run_ours(config, workdir, f"ours-{precision}")
        results[f"ours_{precision}"] = {
            "samples_per_second": run["unfrozen"]["samples_per_second"],
            "accuracy": run["accuracy"],
            "train_seconds": run["unfrozen"]["train_seconds"],
        }
        print(
            f"{'ours_' + precision:>18}: {run['unfrozen']['samples_per_second']:7.1f} samples/s  "
            f"accuracy {run['accuracy']:.4f}",
            flush=True,
        )
        if precision == "bf16":
            from transformers import AutoConfig, AutoTokenizer

            backbone = resolve_backbone(BACKBONE)
            texts = pd.read_csv(files["train"], sep="\t", quoting=3, keep_default_na=False)["sentence"].tolist()
            lengths = np.array(
                [
                    len(ids)
                    for ids in AutoTokenizer.from_pretrained(backbone)(texts, truncation=True, max_length=128)[
                        "input_ids"
                    ]
                ]
            )
            flops = training_flops(lengths, AutoConfig.from_pretrained(backbone)) / run["unfrozen"]["train_seconds"]
            results["mfu"] = {
                "achieved_gflops": flops / 1e9,
                "peak_gflops_fp32": matmul_peak(torch.float32) / 1e9,
                "peak_gflops_bf16": matmul_peak(torch.bfloat16) / 1e9,
            }
            results["mfu"]["utilisation_vs_bf16_peak"] = flops / (results["mfu"]["peak_gflops_bf16"] * 1e9)
    best_hf = max(("hf_grouped", "hf_grouped_bf16"), key=lambda k: results[k]["samples_per_second"])
    for ours in ("ours_fp32", "ours_bf16"):
        for hf in ("hf_padded", "hf_dynamic", "hf_grouped", best_hf):
            results[f"ratio_{ours}_vs_{hf}"] = results[ours]["samples_per_second"] / results[hf]["samples_per_second"]
    print(json.dumps({k: round(v, 2) for k, v in results.items() if k.startswith("ratio")}, indent=1))
    print("MFU:", json.dumps({k: round(v, 3) for k, v in results["mfu"].items()}))
    return results


def frozen_cost(workdir: Path) -> dict:
    """Seconds per extra frozen epoch: head on cached features vs full forward passes."""
    from finetune_core.model.backbone import load_for_task, load_tokenizer
    from finetune_core.model.batching import encode
    from finetune_core.model.heads import head_spec
    from finetune_core.training.device import runtime_for
    from finetune_core.training.loop import StepSettings, network_epoch
    from finetune_core.training.losses import targets_tensor
    from finetune_core.training.optim import make_optimizer

    files = sst2_files(workdir, 2000)
    config = our_config(files, unfrozen={"epochs": 0}, frozen={"epochs": 20, "learning_rate": 1e-2})
    prepared = prepare_splits(config, workdir / "frozen-data")
    cached = frozen_stage.train_frozen(
        StageInputs(config, prepared, resolve_backbone(BACKBONE), workdir / "frozen-cached")
    )
    per_epoch_cached = cached.train_seconds / cached.epochs_run
    backbone = resolve_backbone(BACKBONE)
    model = load_for_task(backbone, "classification", prepared.labels)
    spec, runtime = head_spec(model, cached.extra["pooling"]), runtime_for(config.training)
    for parameter in model.base_model.parameters():
        parameter.requires_grad_(False)
    frame = prepared.frame("train")
    encoded = encode(load_tokenizer(backbone), frame["text"].tolist(), 128)
    optimizer = make_optimizer([{"params": list(model.classifier.parameters())}], 1e-2)
    started = time.perf_counter()
    network_epoch(
        model,
        spec,
        encoded,
        targets_tensor(frame["label"].to_numpy(), "classification"),
        np.random.default_rng(0),
        StepSettings("classification", optimizer, None, 32, 1.0, runtime),
        frozen_backbone=True,
    )
    per_epoch_forward = time.perf_counter() - started
    result = {
        "extraction_seconds_once": cached.extra["feature_seconds"],
        "seconds_per_epoch_cached": per_epoch_cached,
        "seconds_per_epoch_forward_passes": per_epoch_forward,
        "ratio_per_extra_epoch": per_epoch_forward / per_epoch_cached,
        "precision": runtime.precision,
    }
    print(json.dumps(result, indent=1))
    return result


def full(workdir: Path, overrides: dict) -> dict:
    files = sst2_files(workdir, None)
    run = run_ours(our_config(files, feature_cache=False, **overrides), workdir, "full")
    result = {
        "overrides": overrides,
        "accuracy": run["accuracy"],
        "seconds": run["seconds"],
        "rows": run["rows"],
        "unfrozen_samples_per_second": run["unfrozen"]["samples_per_second"],
        "best_epoch": run["unfrozen"]["best_epoch"],
        "val_history": [h["val_accuracy"] for h in run["unfrozen"]["history"]],
    }
    print(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["throughput", "frozen", "budget", "full", "freeze"])
    parser.add_argument("--layers", default="0,1,2,3,4,5,6", help="`freeze` only: freeze_layers values")
    parser.add_argument("--seeds", default="42,43,44", help="`freeze` only: training seeds")
    parser.add_argument("--epochs", type=int, default=3, help="`freeze` only: stage-2 epochs")
    parser.add_argument("--precisions", default="fp32,bf16", help="`freeze` only: precisions, side by side")
    parser.add_argument(
        "--token-matrix",
        default="seen",
        help="`freeze` only: comma-separated, each in turn: seen (default: the rows train uses are optimised), "
        "all (every row, as HF Trainer trains them), frozen (freeze_word_embeddings)",
    )
    parser.add_argument("--skip-hf", action="store_true", help="`freeze` only: no HF Trainer runs (accuracy table)")
    parser.add_argument(
        "--hf-after",
        action="store_true",
        help="`freeze` only: HF Trainer also runs after ours for each seed; ratios against the mean of its two speeds",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--minutes", type=float, default=10.0, help="budget for `budget`")
    parser.add_argument(
        "--training",
        type=json.loads,
        default={},
        help='`full`, `budget`, `freeze`: training overrides as JSON, e.g. \'{"unfrozen": {"learning_rate": 1e-4}}\'',
    )
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument(
        "--experiment", default=None, help="folder under bench/results/ (default: by command, see EXPERIMENT)"
    )
    parser.add_argument(
        "--hf-from", type=Path, default=None, help="`budget` only: HF figure from an earlier results file"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        result = {
            "throughput": lambda: throughput(workdir),
            "frozen": lambda: frozen_cost(workdir),
            "budget": lambda: budget(workdir, sys.modules[__name__], args.minutes, args.hf_from, args.training),
            "full": lambda: full(workdir, args.training),
            "freeze": lambda: freeze_table(
                workdir,
                _ints(args.layers),
                _ints(args.seeds),
                args.epochs,
                sys.modules[__name__],
                args.precisions.split(","),
                not args.skip_hf,
                args.training,
                tuple(args.token_matrix.split(",")),
                args.hf_after,
            ),
        }[args.which]()
    if isinstance(result, dict) and "machine_before" not in result:  # `freeze` records it before and after
        result["machine"] = machine()
    if isinstance(result, dict):
        result["command"] = invocation("bench.engine")
    name = f"engine-{args.which}" if args.which == "freeze" else args.which
    out = results_file(args.experiment or EXPERIMENT[args.which], f"{name}{args.tag}.json")
    out.write_text(json.dumps(result, indent=2, default=str))


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


if __name__ == "__main__":
    main()
