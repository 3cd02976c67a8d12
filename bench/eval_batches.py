"""Inference batches capped in padded tokens (``training.eval_batch_tokens``) against plain row
counts, each pass timed back to back in one process on the same rows:

    python -m bench.eval_batches [--precision fp32] [--rounds 3] [--out FILE]

Passes (the bundled all-MiniLM-L6-v2, SST-2, max length 128): the layer-cache fill of
``freeze_layers: 3`` (embeddings + three blocks, no_grad) over 1,800 train rows and over 200
validation rows, as at a ``freeze_after_epochs`` switch; the full model's logits over the 872 test
sentences (evaluation, serving); the full encoder's pooled features over the 1,800 rows (stage 1's
features pass). Variants: 32, 64, 128 rows (128 is ``eval_batch_size``'s default, the baseline) and
caps of 512 ... 2,048 tokens (at most 128 rows). Rounds interleave the variants; the best of the
rounds is kept and printed as a ratio to the baseline's time. CPU flags and load go with the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import pandas as pd
import torch

from bench.machine import machine
from bench.paths import REPO, RESULTS
from finetune_core.model.backbone import resolve_backbone
from finetune_core.model.batching import BatchLimit, collate, encode, sorted_batches
from finetune_core.model.encoder_split import lower_hidden_states
from finetune_core.model.heads import head_spec
from finetune_core.model.inference import predict_outputs

SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))
BASELINE = "128 rows"
VARIANTS = {
    "32 rows": BatchLimit(32),
    "64 rows": BatchLimit(64),
    BASELINE: BatchLimit(128),
    **{f"{t} tokens": BatchLimit(128, t) for t in (512, 768, 1024, 1536, 2048)},
}


def _read(split: str) -> list[str]:
    return pd.read_csv(SST2 / f"{split}.tsv", sep="\t", quoting=3, keep_default_na=False)["sentence"].tolist()


@torch.inference_mode()
def lower_pass(model, encoded, limit: BatchLimit, autocast) -> None:
    for batch in sorted_batches(encoded.lengths, limit):
        with autocast():
            lower_hidden_states(model, collate(encoded, batch), 3)


@torch.inference_mode()
def features_pass(model, spec, encoded, limit: BatchLimit, autocast) -> None:
    for batch in sorted_batches(encoded.lengths, limit):
        with autocast():
            spec.features(model, collate(encoded, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "eval-batches" / "eval-batches.json")
    args = parser.parse_args()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    backbone = resolve_backbone("bundled:all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2).eval()
    spec = head_spec(model, "mean")
    bf16 = args.precision == "bf16"
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    train = pd.Series(_read("train")).sample(n=2000, random_state=0).tolist()  # bench/engine.py's 2,000 rows
    splits = {
        "train": encode(tokenizer, train[:1800], 128),
        "validation": encode(tokenizer, train[1800:], 128),
        "test": encode(tokenizer, _read("test"), 128),
    }
    passes = {
        "layer cache, 1,800 train rows": lambda limit: lower_pass(model, splits["train"], limit, autocast),
        "layer cache, 200 validation rows": lambda limit: lower_pass(model, splits["validation"], limit, autocast),
        "test logits, 872 rows": lambda limit: predict_outputs(model, splits["test"], limit, "cpu", autocast, spec),
        "features, 1,800 train rows": lambda limit: features_pass(model, spec, splits["train"], limit, autocast),
    }
    result = {
        "setup": f"{args.precision}, best of {args.rounds} interleaved rounds; baseline {BASELINE}",
        "machine_before": machine(),
        "tokens_per_row": {s: float(e.lengths.mean()) for s, e in splits.items()},
        "seconds": {},
    }
    print(result["machine_before"], result["tokens_per_row"], flush=True)
    passes["layer cache, 1,800 train rows"](VARIANTS[BASELINE])  # warm-up, not timed
    for name, run in passes.items():
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant, limit in VARIANTS.items():
                started = time.perf_counter()
                run(limit)
                times[variant].append(time.perf_counter() - started)
        best = {v: min(t) for v, t in times.items()}
        result["seconds"][name] = {v: {"best": best[v], "rounds": times[v]} for v in VARIANTS}
        line = ", ".join(f"{v} {best[v]:.3f} s ({best[BASELINE] / best[v]:.2f}x)" for v in VARIANTS)
        print(f"{name}: {line}", flush=True)
    result["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
