"""Throughput levers of the unfrozen stage, each measured back to back in one process on the same
batches (2,000 SST-2 rows, length-grouped batches of 32, the bundled all-MiniLM-L6-v2):

    python -m bench.engine_levers [--batches 40] [--compile] [--only "fp32 sdpa" ...] [--rounds 2] [--out FILE]

A training step is forward + backward + clip + fused AdamW step, as in ``loop.network_epoch``.
Variants: precision (fp32, bf16 autocast), attention kernel (sdpa, eager), padding to a multiple of
8, threads (1, 2), per-step loss read, dropout off, the token-embedding matrix frozen
(``training.unfrozen.freeze_word_embeddings``), only the token rows the 2,000 rows use in the
optimizer (fixed behaviour: ``embedding_rows.SEEN_ROWS_ONLY``), torch.compile (dynamic shapes, or static
shapes with batches padded to length buckets 16/32/64/128, and those buckets without compile;
compile time reported apart), query/key/value in one matrix product (prototype ``fuse_qkv``),
and the upper-blocks step of ``freeze_layers: 3`` (cached states, pad 1 vs 8); then evaluation
batch sizes for ``predict_outputs`` on the 872 test sentences. Writes bench/results/engine-levers/.
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
import numpy as np
import pandas as pd
import torch

from bench.machine import machine
from bench.paths import REPO, RESULTS
from finetune_core.model.backbone import resolve_backbone
from finetune_core.model.batching import collate, encode, length_grouped_batches
from finetune_core.model.embedding_and_dropout import freeze_word_embeddings
from finetune_core.model.embedding_rows import attach, use_seen_rows
from finetune_core.model.encoder_split import lower_hidden_states, upper_spec
from finetune_core.model.heads import forward_logits, head_spec
from finetune_core.model.inference import predict_outputs
from finetune_core.training.optim import make_optimizer

SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))


def _pad(batch: dict, multiple: int) -> dict:
    width = batch["attention_mask"].shape[1]
    extra = -(-width // multiple) * multiple - width
    if not extra:
        return batch
    # dimension 1 is the token axis of ids and masks [rows, tokens] and of states [rows, tokens, hidden]
    return {k: torch.nn.functional.pad(v, (0, 0) * (v.dim() - 2) + (0, extra), value=0) for k, v in batch.items()}


BUCKETS = (16, 32, 64, 128)  # token lengths a batch pads up to for torch.compile with static shapes


def _pad_to_bucket(batch: dict) -> dict:
    width = batch["attention_mask"].shape[1]
    return _pad(batch, next(b for b in BUCKETS if b >= width))


def _model(backbone, attention: str = "sdpa", dropout: float | None = None, attention_dropout: float | None = None):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    rates = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    if attention_dropout is not None:
        rates["attention_probs_dropout_prob"] = attention_dropout
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone, num_labels=2, attn_implementation=attention, **rates
    )
    return model.train()


def fuse_qkv(model) -> None:
    """Prototype lever: each BERT self-attention computes query, key and value with one matrix
    product over the three weights concatenated (one [rows, 3d] product instead of three [rows, d]
    ones); the parameters, and so the saved model, stay as they are."""
    import types

    import torch.nn.functional as F
    from transformers.models.bert import modeling_bert

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        shape = hidden_states.shape[:-1]
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        qkv = F.linear(hidden_states, weight, bias).view(*shape, 3, -1, self.attention_head_size)
        query, key, value = (qkv.select(-3, i).transpose(1, 2) for i in range(3))
        attend = modeling_bert.ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, modeling_bert.eager_attention_forward
        )
        dropout = self.dropout.p if self.training else 0.0
        out, weights = attend(self, query, key, value, attention_mask, dropout=dropout, scaling=self.scaling, **kwargs)
        return out.reshape(*shape, -1).contiguous(), weights

    for layer in model.bert.encoder.layer:
        layer.attention.self.forward = types.MethodType(forward, layer.attention.self)


def time_steps(
    model, spec, batches, targets, bf16: bool, read_loss: bool = True, warmup: int = 3, seen_rows=None, forward=None
) -> float:
    """Samples/s of training steps over ``batches`` (after ``warmup`` untimed steps); ``forward(inputs)``
    gives the logits (default: ``forward_logits``)."""
    forward = forward or (lambda inputs: forward_logits(model, spec, inputs))
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer([{"params": parameters, "weight_decay": 0.01}], 1e-5)
    attach(seen_rows, optimizer)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    rows, started = 0, None
    for i, (inputs, index) in enumerate(batches):
        if i == warmup:
            started = time.perf_counter()
        with autocast if bf16 else contextlib.nullcontext():
            loss = torch.nn.functional.cross_entropy(forward(inputs).float(), targets[index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if read_loss:
            float(loss.detach())
        if started is not None:
            rows += len(index)
    return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--compile", action="store_true", help="also torch.compile(dynamic=True) (minutes on 2 cores)")
    parser.add_argument("--only", nargs="*", default=None, help="these variants (exact names, as printed)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (the best of them is kept)")
    parser.add_argument("--out", type=Path, default=RESULTS / "engine-levers" / "engine-levers.json")
    args = parser.parse_args()
    backbone = resolve_backbone("bundled:all-MiniLM-L6-v2")
    from transformers import AutoTokenizer

    train = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, keep_default_na=False).sample(n=2000, random_state=0)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    encoded = encode(tokenizer, train["sentence"].tolist(), 128)
    targets = torch.tensor(train["label"].to_numpy())
    order = length_grouped_batches(encoded.lengths, 32, np.random.default_rng(0))[: args.batches]
    raw = [(collate(encoded, index), index) for index in order]
    result = {"machine_before": machine(), "batches": len(raw), "train": {}}
    print(result["machine_before"], flush=True)

    def train_variant(
        attention="sdpa",
        bf16=True,
        pad=1,
        read_loss=True,
        threads=None,
        frozen=0,
        compiled=False,
        words=False,
        dropout=None,
        attention_dropout=None,
        seen=False,
        buckets=False,
        fused_qkv=False,
    ):
        def run() -> float:
            saved = torch.get_num_threads()
            torch.set_num_threads(threads or saved)
            model = _model(backbone, attention, dropout, attention_dropout)
            spec, batches = head_spec(model, "mean"), [(_pad(b, pad), i) for b, i in raw]
            if buckets:  # static shapes for torch.compile: one graph per bucket length
                batches = [(_pad_to_bucket(b), i) for b, i in batches]
            if frozen:  # the upper-blocks step of freeze_layers on precomputed lower states
                model.eval()
                with torch.inference_mode():
                    states = [lower_hidden_states(model, b, frozen).clone() for b, _ in raw]
                model.train()
                for name, parameter in model.named_parameters():
                    if name.startswith(("bert.embeddings.",)) or any(f".layer.{k}." in name for k in range(frozen)):
                        parameter.requires_grad_(False)
                spec = upper_spec(spec, "mean", frozen)
                batches = [
                    (_pad({"hidden_states": s.float(), "attention_mask": b["attention_mask"]}, pad), i)
                    for s, (b, i) in zip(states, raw)
                ]
            if fused_qkv:
                fuse_qkv(model)
            if words:  # training.unfrozen.freeze_word_embeddings
                freeze_word_embeddings(model)
            # seen token rows (fixed behaviour since training.token_rows was retired) over the 2,000 rows
            seen_rows = use_seen_rows(model, encoded.input_ids) if seen else None
            forward = None
            if compiled:
                # the pooled head reads the encoder through attributes (spec.features), which would
                # bypass a compiled module's forward: compile the whole logits function instead
                forward = torch.compile(
                    lambda inputs: forward_logits(model, spec, inputs), dynamic=compiled == "dynamic"
                )
                # compile every graph the timed steps will meet before the clock starts
                first_of_shape = {tuple(b["input_ids"].shape): (b, i) for b, i in reversed(batches)}
                started = time.perf_counter()
                warm = list(first_of_shape.values()) + batches[:2]
                time_steps(model, spec, warm, targets, bf16, warmup=0, forward=forward)
                result.setdefault("compile_seconds", {}).setdefault(str(compiled), []).append(
                    time.perf_counter() - started
                )
            try:
                return time_steps(model, spec, batches, targets, bf16, read_loss, seen_rows=seen_rows, forward=forward)
            finally:
                torch.set_num_threads(saved)

        return run

    variants = {
        "bf16 sdpa": train_variant(),
        "bf16 eager": train_variant(attention="eager"),
        "bf16 sdpa pad8": train_variant(pad=8),
        "bf16 sdpa no per-step loss read": train_variant(read_loss=False),
        "bf16 sdpa 1 thread": train_variant(threads=1),
        "fp32 sdpa": train_variant(bf16=False),
        "fp32 eager": train_variant(bf16=False, attention="eager"),
        "fp32 sdpa pad8": train_variant(bf16=False, pad=8),
        "fp32 sdpa word embeddings frozen": train_variant(bf16=False, words=True),
        "bf16 sdpa word embeddings frozen": train_variant(words=True),
        "fp32 sdpa seen token rows": train_variant(bf16=False, seen=True),
        "bf16 sdpa seen token rows": train_variant(seen=True),
        "fp32 sdpa seen token rows, fused QKV": train_variant(bf16=False, seen=True, fused_qkv=True),
        "fp32 sdpa no dropout, seen token rows": train_variant(bf16=False, dropout=0.0, seen=True),
        "fp32 sdpa 1 thread": train_variant(bf16=False, threads=1),
        "fp32 sdpa no dropout": train_variant(bf16=False, dropout=0.0),
        "fp32 sdpa no attention dropout": train_variant(bf16=False, attention_dropout=0.0),
        "fp32 eager no attention dropout": train_variant(bf16=False, attention="eager", attention_dropout=0.0),
        "fp32 sdpa no dropout, word embeddings frozen": train_variant(bf16=False, dropout=0.0, words=True),
        "bf16 upper N=3 pad1": train_variant(frozen=3),
        "bf16 upper N=3 pad8": train_variant(frozen=3, pad=8),
    }
    if args.compile:
        variants["bf16 sdpa torch.compile dynamic"] = train_variant(compiled="dynamic")
        variants["fp32 sdpa torch.compile dynamic"] = train_variant(bf16=False, compiled="dynamic")
        # without seen token rows: their unseen-row scale is a Python float attribute that changes every
        # step, which dynamo may guard on and recompile for (not measured)
        variants["fp32 sdpa torch.compile buckets"] = train_variant(bf16=False, compiled="static", buckets=True)
        variants["fp32 sdpa padded to buckets"] = train_variant(bf16=False, buckets=True)
    if args.only:
        variants = {name: run for name, run in variants.items() if name in args.only}
    rounds = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved rounds: drift in the machine's load hits every variant alike
        for name, run in variants.items():
            rounds[name].append(run())
            print(f"{name:>32}: {rounds[name][-1]:7.1f} samples/s", flush=True)
    result["train"] = {name: {"rounds": values, "best": max(values)} for name, values in rounds.items()}

    test = pd.read_csv(SST2 / "test.tsv", sep="\t", quoting=3, keep_default_na=False)
    test_encoded = encode(tokenizer, test["sentence"].tolist(), 128)
    model = _model(backbone).eval()
    spec = head_spec(model, "mean")
    result["eval"] = {}
    for size in (32, 64, 128, 256):
        started = time.perf_counter()
        predict_outputs(model, test_encoded, size, "cpu", lambda: torch.autocast("cpu", dtype=torch.bfloat16), spec)
        result["eval"][size] = len(test) / (time.perf_counter() - started)
        print(f"eval batch {size:>4}: {result['eval'][size]:7.1f} rows/s", flush=True)
    result["machine_after"] = machine()
    args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
