"""Where stage 2's time goes on this CPU: a torch.profiler breakdown of one training epoch (every
block training, and the upper blocks of ``freeze_layers: 3`` on cached states) and of the pass that
fills the layer cache at a ``freeze_after_epochs`` switch, with the matrix products' FLOP/s (counted
from the profiled shapes) against a matmul peak measured in the same process:

    python bench/stage2_profile.py [--layers 0,3] [--rows 1800] [--out FILE]

The stage's own code on its defaults (``training`` section defaults: batch 32, lr 1e-4 with layer
decay 0.9, fused AdamW, clipping at 1.0, NumPy dropout masks, 1,024-token inference batches), the
bundled all-MiniLM-L6-v2, SST-2 train rows, fp32 unless ``--precision bf16``. Each epoch runs once
unprofiled (its wall time) and once under the profiler. Categories are by the ops' own time:
matrix products (mm, addmm, bmm), fused attention, the optimizer's kernel, the gradient norm of
clipping, every other op; "outside ops" is wall time no op accounts for (Python, NumPy masks and
batch gathering). Nothing is asserted; the CPU flags go with the result.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np
import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from bench.machine import machine
from bench.paths import REPO, RESULTS
from bench.timing import matmul_flops, seconds_per_call
from finetune_core.config.sections import TrainingConfig
from finetune_core.model import embedding_rows
from finetune_core.model.backbone import resolve_backbone
from finetune_core.model.batching import encode
from finetune_core.model.dropout_masks import STAGE_MASKS, choose_masks
from finetune_core.model.encoder_split import freeze_lower, upper_spec
from finetune_core.model.heads import head_spec
from finetune_core.model.layer_cache import cached_layer_states
from finetune_core.training import cached_lower_blocks
from finetune_core.training.device import Runtime, eval_batches
from finetune_core.training.loop import StepSettings, network_batches, network_epoch
from finetune_core.training.optim import layerwise_groups, make_optimizer, make_scheduler

SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm"}
CATEGORIES = {
    "aten::_fused_adamw_": "optimizer (fused AdamW)",
    "aten::linalg_vector_norm": "gradient norm (clipping)",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "fused attention (SDPA)",
}


def matmul_flop(name: str, shapes: list) -> float:
    """FLOPs of one mm / addmm / bmm call from its recorded input shapes."""
    if name == "aten::addmm":
        shapes = shapes[1:]  # the bias comes first
    (*batch, m, k), (*_, n) = shapes[0], shapes[1]
    return 2.0 * math.prod(batch) * m * k * n


def breakdown(prof, wall: float) -> dict:
    """Seconds by category (ops' self time), and the matrix products' achieved FLOP/s."""
    seconds, others, flop, matmul_seconds = collections.Counter(), collections.Counter(), 0.0, 0.0
    for event in prof.events():
        own = event.self_cpu_time_total / 1e6
        if event.name in MATMULS:
            seconds["matrix products"] += own
            matmul_seconds += own
            flop += matmul_flop(event.name, event.input_shapes)
        elif event.name.startswith("aten::"):
            category = CATEGORIES.get(event.name, "other ops")
            seconds[category] += own
            if category == "other ops":
                others[event.name] += own
    seconds["outside ops"] = max(wall - sum(seconds.values()), 0.0)
    return {
        "profiled_seconds": wall,
        "seconds": dict(seconds),
        "share": {k: v / wall for k, v in seconds.items()},
        "matmul_gflops": flop / max(matmul_seconds, 1e-9) / 1e9,
        "top_other_ops": {name: t for name, t in others.most_common(6)},
    }


def timed(run) -> tuple[float, float, dict]:
    """(unprofiled wall seconds, profiled wall seconds, breakdown) of ``run()`` after one warm-up."""
    run()
    started = time.perf_counter()
    run()
    plain = time.perf_counter() - started
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        started = time.perf_counter()
        run()
        profiled = time.perf_counter() - started
    return plain, profiled, breakdown(prof, profiled)


def clipping_levers(parameters: list[torch.Tensor]) -> dict:
    """Milliseconds a step of the two halves of gradient clipping on tensors shaped like the trainable
    parameters, and of the cheaper forms tried: the norm from dot products (BLAS) instead of torch's
    norm kernel, and no scaling pass at all (the bound on what folding the clip factor into the
    optimizer's kernel could save)."""
    grads = [torch.randn_like(p) for p in parameters]
    flat = [g.view(-1) for g in grads]
    return {
        "norm (torch._foreach_norm, what clip_grad_norm_ runs)": seconds_per_call(
            lambda: torch._foreach_norm(grads), 100
        )
        * 1e3,
        "norm from dot products": seconds_per_call(lambda: [torch.dot(g, g) for g in flat], 100) * 1e3,
        "scaling (torch._foreach_mul_)": seconds_per_call(lambda: torch._foreach_mul_(grads, 1.0), 100) * 1e3,
    }


def profile_stage(frozen: int, backbone, data, training, runtime, report) -> dict:
    """With ``frozen`` blocks: the switch's cache pass (when > 0), then one training epoch; returns
    ``clipping_levers`` on its trainable parameters."""
    from transformers import AutoModelForSequenceClassification

    train, validation, targets = data
    stage, inference = training.unfrozen, eval_batches(training, runtime)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
    spec = head_spec(model, "mean")
    names = freeze_lower(model, frozen)
    choose_masks(model, STAGE_MASKS["unfrozen"], runtime.device)
    groups = layerwise_groups(model, spec, stage.learning_rate, stage.layer_lr_decay, training.weight_decay)
    optimizer = make_optimizer(cached_lower_blocks.without_parameters(groups, names), stage.learning_rate)
    scheduler = make_scheduler(optimizer, stage.scheduler, 10, 10_000)
    source, run_spec, inputs_of = train, spec, None
    with tempfile.TemporaryDirectory() as scratch:
        if frozen:
            model.eval()  # the switch's pass: embeddings and the lowest blocks, no dropout, no gradient
            fills = iter(range(3))  # warm-up, timed, profiled: each into files of its own

            def fill():
                r = next(fills)
                for split, encoded in (("train", train), ("validation", validation)):
                    path = Path(scratch) / f"{split}-{r}.npy"
                    cached_layer_states(model, frozen, encoded, path, inference, runtime.device, runtime.autocast)

            report(f"cache pass, {frozen} blocks", len(train) + len(validation), *timed(fill))
            path = Path(scratch) / "train-0.npy"  # the warm-up's file
            cache, _ = cached_layer_states(model, frozen, train, path, inference, runtime.device, runtime.autocast)
            source, run_spec, inputs_of = (
                cache,
                upper_spec(spec, "mean", frozen),
                cached_lower_blocks.cached_inputs(cache),
            )
        else:  # the default: only the token rows train uses are in the optimizer
            embedding_rows.attach(embedding_rows.use_seen_rows(model, train.input_ids), optimizer)
        model.train()
        epochs = iter(range(100))

        def epoch():
            rng = np.random.default_rng(next(epochs))
            settings = StepSettings(
                "classification", optimizer, scheduler, training.batch_size, training.max_grad_norm, runtime
            )
            return network_epoch(model, run_spec, source, targets, rng, settings, inputs_of=inputs_of)

        report(f"training epoch, {frozen} blocks frozen", len(train), *timed(epoch))
        return clipping_levers([p for p in model.parameters() if p.requires_grad])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="0,3", help="frozen blocks to profile an epoch at (0 = every block)")
    parser.add_argument("--rows", type=int, default=1800, help="train rows (and 200 more for validation's cache)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--out", type=Path, default=RESULTS / "stage2-profile" / "stage2-profile.json")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    training = TrainingConfig()
    runtime = Runtime(torch.device("cpu"), args.precision)
    backbone = resolve_backbone("bundled:all-MiniLM-L6-v2")
    sst2 = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, keep_default_na=False)
    sample = sst2.sample(n=args.rows + 200, random_state=0)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    train = encode(tokenizer, sample["sentence"].tolist()[: args.rows], training.max_length)
    validation = encode(tokenizer, sample["sentence"].tolist()[args.rows :], training.max_length)
    targets = torch.tensor(sample["label"].to_numpy()[: args.rows])
    peak = matmul_flops(torch.float32 if args.precision == "fp32" else torch.bfloat16, 2048, 10)
    result = {"machine_before": machine(), "precision": args.precision, "rows": args.rows, "peak_gflops": peak / 1e9}
    print(result["machine_before"], f"matmul peak {peak / 1e9:.0f} GFLOP/s", flush=True)

    def report(name: str, rows: int, plain: float, profiled: float, parts: dict) -> None:
        parts.update(
            wall_seconds=plain, rows_per_second=rows / plain, matmul_of_peak=parts["matmul_gflops"] * 1e9 / peak
        )
        result[name] = parts
        shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(parts["share"].items(), key=lambda kv: -kv[1]))
        print(
            f"{name}: {plain:.2f} s ({rows / plain:.0f} rows/s; profiled {profiled:.2f} s): {shares}; matrix "
            f"products at {parts['matmul_gflops']:.0f} GFLOP/s ({parts['matmul_of_peak']:.0%} of the peak)",
            flush=True,
        )
        print("  other ops: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts["top_other_ops"].items()), flush=True)

    steps = network_batches(args.rows, training.batch_size)
    for frozen in [int(n) for n in args.layers.split(",")]:
        milliseconds = profile_stage(frozen, backbone, (train, validation, targets), training, runtime, report)
        step_ms = result[f"training epoch, {frozen} blocks frozen"]["wall_seconds"] / steps * 1e3
        result[f"clipping levers, {frozen} blocks frozen"] = {"step_ms": step_ms, "ms": milliseconds}
        print(
            f"  a step {step_ms:.1f} ms; " + ", ".join(f"{k} {v:.2f} ms" for k, v in milliseconds.items()), flush=True
        )
    result["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
