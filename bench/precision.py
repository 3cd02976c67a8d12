"""Which precision is faster on this CPU, and what ``precision: auto`` picks here.

    python bench/precision.py [--out bench/results/precision.json]

Times, back to back in one process at torch's threads: a square 1024 × 1024 matrix product in
fp32 and in bf16, and one feed-forward linear layer of an all-MiniLM-L6-v2 stage-2 step
(448 token rows × 384 → 1536, forward and backward) in fp32 and under bf16 autocast, the way
``training.precision: bf16`` runs it. bf16 is native only with AVX-512 BF16 or AMX; on other
AVX-512 CPUs oneDNN still accepts bf16 (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` says
yes) but emulates it, which is what ``auto`` must not choose. Prints the CPU flags, the figures,
the bf16/fp32 ratios and both detections; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from machine import machine  # noqa: E402
from timing import matmul_flops, seconds_per_call  # noqa: E402

from finetune_core.training.device import cpu_supports_bf16, resolve_precision  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "precision.json")
    args = parser.parse_args()
    facts = machine()
    print(f"machine: {facts}")
    results = {
        "machine": facts,
        "matmul_1024_gflops": {
            "fp32": square_matmul_gflops(torch.float32),
            "bf16": square_matmul_gflops(torch.bfloat16),
        },
        "step_linear_ms": {"fp32": step_linear_ms(False), "bf16_autocast": step_linear_ms(True)},
        "onednn_accepts_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "native_bf16": cpu_supports_bf16(),
        "auto_resolves_to": resolve_precision("auto", torch.device("cpu")),
    }
    matmul, linear = results["matmul_1024_gflops"], results["step_linear_ms"]
    results["bf16_over_fp32"] = {
        "matmul_speed": matmul["bf16"] / matmul["fp32"],
        "step_linear_speed": linear["fp32"] / linear["bf16_autocast"],
    }
    print(f"1024² matmul: fp32 {matmul['fp32']:.1f} GFLOP/s, bf16 {matmul['bf16']:.1f} GFLOP/s")
    print(f"step linear fwd+bwd: fp32 {linear['fp32']:.2f} ms, bf16 autocast {linear['bf16_autocast']:.2f} ms")
    print(f"bf16 speed / fp32: {results['bf16_over_fp32']}")
    print(
        f"oneDNN accepts bf16: {results['onednn_accepts_bf16']}; native bf16: {results['native_bf16']}; "
        f"precision auto -> {results['auto_resolves_to']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
