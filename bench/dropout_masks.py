"""What one dropout call costs on this CPU, and what a cheaper mask could save in a stage-2 step.

    python -m bench.dropout_masks [--calls 2000] [--out FILE]

Times, per call, on the shapes of an all-MiniLM-L6-v2 step on SST-2 (batch 32 of ~14 tokens:
hidden states [32, 14, 384], attention probabilities [32, 12, 14, 14]), fp32, torch's threads:
``F.dropout`` (what BERT's ``nn.Dropout`` runs: a ``bernoulli_`` mask), the mask alone, a mask
from ``torch.rand`` compared with p, and a mask from 15 bits of each 16-bit quarter of an int64
``random_`` draw (one draw serves four elements, p rounded to 1/32768), and what stage 2 runs now
(``finetune_core.model.dropout_masks.drop``: 16-bit draws cut from NumPy PCG64's raw words); then
forward and backward of ``F.dropout`` against ``drop``. A step runs 13 hidden-state dropouts
(embeddings, then attention output and feed-forward output in each of 6 blocks) and 6 on attention
probabilities (inside SDPA's unfused path with torch's masks; with ``drop`` in stage 2's attention
function, ``dropout_masks.ATTENTION``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.machine import machine
from bench.paths import RESULTS
from bench.timing import seconds_per_call
from finetune_core.model.dropout_masks import drop

P = 0.1
HIDDEN_DROPOUTS_PER_STEP = 13  # embeddings + 2 in each of all-MiniLM-L6-v2's 6 blocks


def per_call_us(fn, calls: int) -> float:
    return seconds_per_call(fn, calls, warmup=50) * 1e6


def int16_mask_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    # random_() on int64 fills [0, 2**63): every 16-bit quarter but the top one is uniform, so keep
    # 15 bits of each (p resolves to 1/32768); one draw serves four elements
    threshold = round(p * 32768)
    draws = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_()
    bits = draws.view(torch.int16)[: x.numel()].view(x.shape) & 0x7FFF
    return x * (bits >= threshold) * (32768 / (32768 - threshold))


def variants_on(x: torch.Tensor) -> dict:
    return {
        "F.dropout (bernoulli_ mask)": lambda: torch.nn.functional.dropout(x, P, True),
        "bernoulli_ mask alone": lambda: torch.empty_like(x).bernoulli_(1 - P),
        "torch.rand mask, multiply": lambda: x * (torch.rand_like(x) >= P) * (1 / (1 - P)),
        "int16 mask from random_, multiply": lambda: int16_mask_dropout(x, P),
        "NumPy PCG64 mask (dropout_masks.drop)": lambda: drop(x, P),
        "multiply alone": lambda: x * (1 / (1 - P)),
    }


def forward_backward_on(x: torch.Tensor) -> dict:
    leaf, grad = x.clone().requires_grad_(True), torch.randn_like(x)
    return {
        "F.dropout forward + backward": lambda: torch.nn.functional.dropout(leaf, P, True).backward(grad),
        "drop forward + backward": lambda: drop(leaf, P).backward(grad),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS / "dropout-masks" / "dropout-masks.json")
    args = parser.parse_args()
    result = {"machine_before": machine(), "p": P, "calls": args.calls, "microseconds_per_call": {}}
    print(result["machine_before"], flush=True)
    for shape_name, shape in (
        ("hidden [32, 14, 384]", (32, 14, 384)),
        ("attention [32, 12, 14, 14]", (32, 12, 14, 14)),
    ):
        x = torch.randn(shape)
        variants = variants_on(x)
        timings = {name: per_call_us(fn, args.calls) for name, fn in variants.items()}
        result["microseconds_per_call"][shape_name] = timings
        for name, us in timings.items():
            print(f"{shape_name:>28} {name:>38}: {us:8.1f} us", flush=True)
        timings = {name: per_call_us(fn, args.calls // 4) for name, fn in forward_backward_on(x).items()}
        result["microseconds_per_call"][shape_name] |= timings
        for name, us in timings.items():
            print(f"{shape_name:>28} {name:>38}: {us:8.1f} us", flush=True)
    hidden = result["microseconds_per_call"]["hidden [32, 14, 384]"]
    saved = HIDDEN_DROPOUTS_PER_STEP * (
        hidden["F.dropout (bernoulli_ mask)"] - hidden["int16 mask from random_, multiply"]
    )
    result["forward_ms_saved_per_step_int16"] = saved / 1000
    print(f"int16 masks would save {saved / 1000:.1f} ms of a step's forward pass", flush=True)
    result["machine_after"] = machine()
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
