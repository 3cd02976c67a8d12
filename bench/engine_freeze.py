"""Partial freezing (``training.unfrozen.freeze_layers``) against Hugging Face Trainer, same run:

    python -m bench.engine freeze [--layers 0,1,2,3,4,5,6] [--seeds 42,43,44] [--epochs 3]

2,000 SST-2 rows (1,800 train + 200 validation for ours; HF trains on all 2,000), the bundled
all-MiniLM-L6-v2 (6 blocks), batch 32, max length 128, test = the 872 GLUE dev sentences. HF Trainer
with run_glue defaults plus dynamic padding and length grouping, at each precision asked, seeded and
run once per seed just before ours with that seed, so each ratio is paired by seed and time
(``--hf-after``: once more after ours, the ratio taken against the mean of the two). Ours: the
default recipe (lp-ft, 20 head epochs on cached features, then stage 2) for each N and seed. Stage-2
samples/s is rows × epochs over the time in training steps; with N > 0 the layer cache is filled in
stage 1's features pass, so every stage-2 epoch, the first included, runs the upper blocks only
(with ``freeze_after_epochs`` K, the epochs after the K-th: samples/s after the first epoch are
printed for that). MFU
counts the FLOPs of what runs (the upper blocks' forward + backward, real tokens only) against a
matmul peak measured in the same process.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from bench.hf_baseline import hf_train
from bench.machine import machine


def flops_per_row(lengths: np.ndarray, config, blocks: int) -> float:
    """Forward + backward (3 × forward) FLOPs of ``blocks`` transformer blocks per row, real tokens."""
    hidden, intermediate = config.hidden_size, config.intermediate_size
    dense = 2 * blocks * (4 * hidden * hidden + 2 * hidden * intermediate) * lengths.astype(np.float64)
    attention = 2 * blocks * 2 * hidden * lengths.astype(np.float64) ** 2
    return float(3 * (dense + attention).mean())


# (training settings, stage-2 settings) of each way to treat the token-embedding matrix
TOKEN_MATRIX = {
    "seen": ({"token_rows": "seen"}, {"freeze_word_embeddings": False}),
    "all": ({"token_rows": "all"}, {"freeze_word_embeddings": False}),
    "frozen": ({}, {"freeze_word_embeddings": True}),
}


def freeze_table(
    workdir,
    layers: list[int],
    seeds: list[int],
    epochs: int,
    ctx,
    precisions: list[str],
    with_hf: bool = True,
    overrides: dict | None = None,
    token_matrix: tuple[str, ...] = ("seen",),
    hf_after: bool = False,
) -> dict:
    """``overrides``: our training settings on top of the defaults (e.g. a stage-2 learning rate);
    ``token_matrix``: how stage 2 treats the token-embedding matrix, each N and seed run with each of
    ``seen`` (the default: only the rows train uses are optimised), ``all`` (every row, as HF does),
    ``frozen`` (``freeze_word_embeddings``); ``hf_after``: HF Trainer runs again after ours for each
    seed, and ratios are taken against the mean of its two speeds."""
    overrides = dict(overrides or {})
    unfrozen_overrides = overrides.pop("unfrozen", {})
    from transformers import AutoConfig, AutoTokenizer

    files = ctx.sst2_files(workdir, 2000)
    backbone = ctx.resolve_backbone(ctx.BACKBONE)
    model_config = AutoConfig.from_pretrained(backbone)
    texts = pd.read_csv(files["train"], sep="\t", quoting=3, keep_default_na=False)["sentence"].tolist()
    lengths = np.array(
        [len(i) for i in AutoTokenizer.from_pretrained(backbone)(texts, truncation=True, max_length=128)["input_ids"]]
    )
    total = model_config.num_hidden_layers
    result = {
        "setup": f"2,000 SST-2 rows, batch 32, max length 128, {epochs} stage-2 epochs, seeds {seeds}",
        "machine_before": machine(),
        "peak_gflops": {"fp32": ctx.matmul_peak(torch.float32) / 1e9, "bf16": ctx.matmul_peak(torch.bfloat16) / 1e9},
        "overrides": {**overrides, "unfrozen": unfrozen_overrides},
        "runs": [],
        "hf": [],
    }
    print(result["machine_before"], result["peak_gflops"], flush=True)

    def our_row(precision: str, seed: int, frozen: int, matrix: str) -> dict:
        """One run of ours (stage 2 with ``frozen`` blocks, token matrix treatment ``matrix``), as a row."""
        rows, words = TOKEN_MATRIX[matrix]
        stage2 = {"epochs": epochs, "freeze_layers": frozen, **words, **unfrozen_overrides}
        config = ctx.our_config(files, precision=precision, seed=seed, unfrozen=stage2, **{**rows, **overrides})
        started = time.perf_counter()
        run = ctx.run_ours(config, workdir, f"f{frozen}{matrix}-{precision}-{seed}")
        for stale in (workdir / "layer-cache").glob("*.npy"):  # ~40 MB a run: keep the disk free
            stale.unlink()
        unfrozen, frozen_stage = run["unfrozen"], run["frozen"]
        sps = unfrozen["samples_per_second"]
        return {
            "precision": precision,
            "freeze_layers": frozen,
            "token_matrix": matrix,
            "trained_token_rows": unfrozen["extra"].get("trained_token_rows"),
            "seed": seed,
            "accuracy": run["accuracy"],
            "stage2_samples_per_second": sps,
            "stage2_train_seconds": unfrozen["train_seconds"],
            "epoch_seconds": unfrozen["extra"]["epoch_seconds"],
            # the issue's "per epoch after the first": with freeze_after_epochs, the epochs over the upper
            # blocks (the second's time includes filling the layer cache; layer_cache_seconds says how much)
            "after_first_samples_per_second": after_first(
                unfrozen["extra"]["epoch_seconds"], unfrozen["train_examples"]
            ),
            "layer_cache_seconds": unfrozen["extra"].get("layer_cache_seconds"),
            "stage1_feature_seconds": frozen_stage["extra"].get("feature_seconds"),
            "layer_cache_bytes_per_row": unfrozen["extra"].get("layer_cache_bytes_per_row"),
            "best_val_accuracy": unfrozen["best_metric"],
            "total_seconds": time.perf_counter() - started,
            "mfu": sps
            * flops_per_row(lengths, model_config, total - frozen)
            / (result["peak_gflops"][precision] * 1e9),
        }

    def hf_run(precision: str, seed: int, when: str) -> dict:
        hf = hf_train(
            files,
            ctx.BACKBONE,
            epochs=epochs,
            padding="dynamic",
            group_by_length=True,
            bf16=precision == "bf16",
            seed=seed,
        )
        result["hf"].append({"precision": precision, "seed": seed, "when": when, **hf})
        print(
            f"HF grouped {precision} seed={seed} ({when}): {hf['samples_per_second']:.1f} samples/s, "
            f"accuracy {hf['accuracy']:.4f}",
            flush=True,
        )
        return hf

    for precision in precisions:
        for seed in seeds:
            # HF Trainer just before ours with that seed (and just after, with hf_after: the machine's
            # speed drifts by ±15 % between runs, so ours is compared with the mean of the two)
            hf = [hf_run(precision, seed, "before")] if with_hf else []
            rows = [our_row(precision, seed, n, m) for n in layers for m in token_matrix]
            if with_hf and hf_after:
                hf.append(hf_run(precision, seed, "after"))
            hf_speed = float(np.mean([h["samples_per_second"] for h in hf])) if hf else None
            for row in rows:
                row["hf_samples_per_second"] = hf_speed
                row["vs_hf_same_precision"] = row["stage2_samples_per_second"] / hf_speed if hf_speed else None
                later = row["after_first_samples_per_second"]
                row["after_first_vs_hf"] = later / hf_speed if hf_speed and later else None
                result["runs"].append(row)
                print(
                    f"{precision} N={row['freeze_layers']} token matrix {row['token_matrix']} seed={seed}: "
                    f"{row['stage2_samples_per_second']:6.1f} samples/s "
                    f"({row['vs_hf_same_precision'] or 0:.2f}x HF; epochs after the first "
                    f"{row['after_first_vs_hf'] or 0:.2f}x), accuracy {row['accuracy']:.4f}, MFU {row['mfu']:.2f}, "
                    f"features {row['stage1_feature_seconds']:.1f} s",
                    flush=True,
                )
    result["summary"] = summarise(result["runs"])
    result["machine_after"] = machine()
    return result


def after_first(epoch_seconds: list[float], rows: int) -> float | None:
    """Training rows per second over the epochs after the first (None with one epoch)."""
    return rows * (len(epoch_seconds) - 1) / sum(epoch_seconds[1:]) if len(epoch_seconds) > 1 else None


def summarise(runs: list[dict]) -> list[dict]:
    frame = pd.DataFrame(runs)
    table = frame.groupby(["precision", "freeze_layers", "token_matrix"]).agg(
        accuracy_mean=("accuracy", "mean"),
        accuracy_min=("accuracy", "min"),
        accuracy_max=("accuracy", "max"),
        seeds=("seed", "count"),
        samples_per_second=("stage2_samples_per_second", "mean"),
        vs_hf=("vs_hf_same_precision", "mean"),
        after_first_vs_hf=("after_first_vs_hf", "mean"),
        mfu=("mfu", "mean"),
        feature_seconds=("stage1_feature_seconds", "mean"),
        bytes_per_row=("layer_cache_bytes_per_row", "mean"),
    )
    print(table.round(4).to_string(), flush=True)
    return table.reset_index().to_dict(orient="records")
