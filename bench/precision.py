"""Which precision trains faster on this CPU, and what ``precision: auto`` picks here.

    python -m bench.precision [--rows 2000] [--batches 20] [--rounds 3] [--batch 32] [--length 128] [--out FILE]

The question is the whole training step, not one matrix product: on a CPU with AVX-512 BF16 but
no AMX a feed-forward layer alone ran 1.18x faster in bf16 while the whole MiniLM step ran 0.65x
(docs/benchmarks/precision.md). Measured back to back in one process at torch's threads:

- the unfrozen stage's step on the bundled all-MiniLM-L6-v2: forward, backward, gradient clipping
  and the fused AdamW step over length-grouped batches of SST-2 rows (``bench.engine_levers``'s
  loop), fp32 and bf16 autocast alternated round by round so that load from other processes hits
  both; samples/s per round, their medians and the bf16/fp32 ratio;
- the probe ``auto`` runs on AVX-512 BF16 without AMX (the backbone cut to one block, training
  and inference steps), called directly so that it is measured on any CPU;
- a 1024 x 1024 matrix product and one feed-forward linear step, fp32 and bf16, for reference.

Prints and writes the machine (CPU model, flags, torch, load before and after), the figures and
what ``auto`` resolves to here (bench/results/precision/ by default); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np
import pandas as pd
import torch

from bench.engine_levers import SST2, time_steps
from bench.machine import machine
from bench.paths import invocation, results_file
from bench.timing import matmul_flops, seconds_per_call
from finetune_core.model.backbone import resolve_backbone
from finetune_core.model.batching import collate, encode, length_grouped_batches
from finetune_core.model.heads import head_spec
from finetune_core.training.device import choose_precision, cpu_instructions
from finetune_core.training.precision_probe import measure_bf16_ratio, step_shape

BACKBONE = "bundled:all-MiniLM-L6-v2"


def square_matmul_gflops(dtype: torch.dtype, size: int = 1024, calls: int = 20) -> float:
    return matmul_flops(dtype, size, calls, warmup=3) / 1e9


def step_linear_ms(autocast: bool, rows: int = 448, calls: int = 100) -> float:
    """Forward and backward of one feed-forward layer on a step's token rows (32 rows of ~14 tokens)."""
    layer = torch.nn.Linear(384, 1536)
    x = torch.randn(rows, 384, requires_grad=True)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = layer(x)
        out.float().sum().backward()

    return seconds_per_call(step, calls) * 1e3


def sst2_batches(backbone: Path, rows: int, batch: int, length: int, batches: int):
    """(inputs, row indices) of length-grouped batches over ``rows`` SST-2 sentences, and their labels."""
    from transformers import AutoTokenizer

    train = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, keep_default_na=False).sample(n=rows, random_state=0)
    encoded = encode(AutoTokenizer.from_pretrained(backbone), train["sentence"].tolist(), length)
    order = length_grouped_batches(encoded.lengths, batch, np.random.default_rng(0))[:batches]
    return [(collate(encoded, index), index) for index in order], torch.tensor(train["label"].to_numpy())


def training_steps(backbone: Path, batches, targets, rounds: int) -> dict:
    """Samples/s of whole training steps, fp32 and bf16 alternated ``rounds`` times (fresh weights each)."""
    from transformers import AutoModelForSequenceClassification

    per_round: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for precision in per_round:
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2).train()
            speed = time_steps(model, head_spec(model, "mean"), batches, targets, bf16=precision == "bf16")
            per_round[precision].append(speed)
            print(f"  {precision}: {speed:.1f} samples/s", flush=True)
    medians = {precision: statistics.median(speeds) for precision, speeds in per_round.items()}
    return {"samples_per_second": per_round, "median": medians, "bf16_over_fp32": medians["bf16"] / medians["fp32"]}


def probe(backbone: Path, batch: int, length: int) -> dict:
    """The probe auto runs on AVX-512 BF16 without AMX, measured here whatever the CPU."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(backbone)
    return {
        kind: measure_bf16_ratio(model_config, step_shape(model_config, batch, length, backward=kind == "training"))
        for kind in ("training", "inference")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000, help="SST-2 train rows the batches come from")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per round (after 3 warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="fp32/bf16 rounds, alternated")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128, help="max length (batches pad to their longest row)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/precision/<cpu class>.json")
    args = parser.parse_args()
    backbone = resolve_backbone(BACKBONE)
    results = {"command": invocation("bench.precision"), "machine_before": machine()}
    print(results["machine_before"], flush=True)
    batches, targets = sst2_batches(backbone, args.rows, args.batch, args.length, args.batches + 3)
    print("whole training step (bundled MiniLM):", flush=True)
    results["training_step"] = training_steps(backbone, batches, targets, args.rounds)
    results["probe"] = probe(backbone, args.batch, args.length)
    matmul = {"fp32": square_matmul_gflops(torch.float32), "bf16": square_matmul_gflops(torch.bfloat16)}
    linear = {"fp32": step_linear_ms(False), "bf16_autocast": step_linear_ms(True)}
    results["matmul_1024_gflops"], results["step_linear_ms"] = matmul, linear
    results["reference_bf16_over_fp32"] = {
        "matmul_speed": matmul["bf16"] / matmul["fp32"],
        "step_linear_speed": linear["fp32"] / linear["bf16_autocast"],
    }
    cpu = cpu_instructions()
    auto = choose_precision("auto", torch.device("cpu"), backbone=backbone, batch=args.batch, length=args.length)
    results["auto"] = {"avx512_bf16": cpu.avx512_bf16, "amx": cpu.amx, **auto.params("precision")}
    results["onednn_max_cpu_isa"] = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    results["machine_after"] = machine()
    step, probed = results["training_step"], results["probe"]
    print(f"whole step bf16/fp32: {step['bf16_over_fp32']:.2f} (medians {step['median']})")
    print(f"probe bf16/fp32: training {probed['training']['ratio']:.2f}, inference {probed['inference']['ratio']:.2f}")
    print(f"reference bf16/fp32: {results['reference_bf16_over_fp32']}")
    print(f"auto here: {results['auto']}")
    cpu_class = "amx" if cpu.amx else "avx512-bf16" if cpu.avx512_bf16 else "no-bf16"
    if results["onednn_max_cpu_isa"]:
        cpu_class += f"-isa-{results['onednn_max_cpu_isa'].lower()}"
    out = args.out or results_file("precision", f"precision-{cpu_class}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
