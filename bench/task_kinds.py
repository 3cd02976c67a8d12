"""Task-type benchmarks: our default recipe against its peers on the same rows and backbone, back to back.

    python -m bench.task_kinds mrpc      # sentence pairs: ours vs HF Trainer (run_glue defaults)
    python -m bench.task_kinds reuters   # multilabel: ours vs HF Trainer (BCE; thresholds 0.5 and tuned) vs a
                                    # frozen-encoder one-vs-rest logistic regression with tuned thresholds

Data: ../shared/data/{mrpc,reuters} (or MRPC_DIR / REUTERS_DIR); model: the bundled all-MiniLM-L6-v2.
HF Trainer runs with run_glue's defaults (AdamW 5e-5, linear decay, 3 epochs, batch 32, max length 128)
plus dynamic padding and length grouping, at the precision ours resolves to (bf16 on CPUs with native
bf16, else fp32). Ours holds 10 % of train out for validation (best epoch, calibration, thresholds);
on MRPC HF trains on the whole train file, on Reuters on the same 90 % (its thresholds, and the
probe's, are tuned on our validation rows). Every model is scored by the same metric functions.
Test topics that never occur in train (5 on Reuters, no model can predict them) are removed from
the test rows' label sets. Writes bench/results/{sentence-pairs,multilabel}/tasks-<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np
import pandas as pd

from bench.machine import machine
from bench.paths import REPO, invocation, results_file
from bench.task_peers import frozen_features, hf_train, one_vs_rest_probe
from finetune_core.config.loading import validate_config
from finetune_core.data.multilabel import label_matrix
from finetune_core.data.prepare import LABEL, prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.metrics.multilabel import multilabel_metrics, sigmoid, tune_thresholds
from finetune_core.metrics.scores import classification_metrics
from finetune_core.model.backbone import resolve_backbone
from finetune_core.training import calibration_step, frozen_stage, recipe, unfrozen_stage
from finetune_core.training.device import runtime_for
from finetune_core.training.encoded_splits import outputs_for
from finetune_core.training.stage_setup import StageInputs

DATA = REPO.parent / "shared" / "data"
MRPC = Path(os.environ.get("MRPC_DIR", DATA / "mrpc"))
REUTERS = Path(os.environ.get("REUTERS_DIR", DATA / "reuters"))
EXPERIMENT = {"mrpc": "sentence-pairs", "reuters": "multilabel"}
BACKBONE = "bundled:all-MiniLM-L6-v2"
RAW: dict[str, np.ndarray] = {}  # raw outputs per method and split, saved with --raw PATH for later analysis
HEADLINE = ("f1_macro", "f1_micro", "subset_accuracy", "roc_auc_macro", "accuracy")


def write_inputs(name: str, workdir: Path, train_rows: int | None, test_rows: int | None) -> dict:
    """The benchmark's train/test files (seeded subsets when asked) and our data section."""
    if name == "mrpc":
        train, test = (pd.read_json(MRPC / f"{s}.jsonl", lines=True) for s in ("train", "test"))
        data = {"text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "label"}
    else:
        train, test = (pd.read_json(REUTERS / f"{s}.jsonl", lines=True) for s in ("train", "test"))
        data = {"text_column": "text", "label_column": "labels"}
    if train_rows:
        train = train.sample(n=train_rows, random_state=0)
    if test_rows:
        test = test.sample(n=test_rows, random_state=0)
    if name == "reuters":  # topics train never has: no model can predict them
        known = {label for labels in train["labels"] for label in labels}
        test = test.assign(labels=test["labels"].map(lambda labels: [x for x in labels if x in known]))
    files = {}
    for split, frame in (("train", train), ("test", test)):
        files[split] = workdir / f"{split}.jsonl"
        frame.to_json(files[split], orient="records", lines=True, force_ascii=False)
    return {"train": str(files["train"]), "test": str(files["test"]), **data}


def run_ours(config, workdir: Path, tag: str = "ours") -> tuple[dict, object]:
    """The default recipe as the flow runs it: recipe, frozen, unfrozen, calibration, served test metrics."""
    started = time.perf_counter()
    prepared = prepare_splits(config, workdir / f"{tag}-data")
    resolved, chosen, prepared = recipe.resolve(config, prepared)
    backbone = resolve_backbone(BACKBONE)
    frozen = frozen_stage.train_frozen(StageInputs(resolved, prepared, backbone, workdir / f"{tag}-frozen"))
    unfrozen = unfrozen_stage.train_unfrozen(
        StageInputs(resolved, prepared, workdir / f"{tag}-frozen", workdir / f"{tag}-model")
    )
    calibration = calibration_step.calibrate(resolved, prepared, workdir / f"{tag}-model")
    seconds = time.perf_counter() - started
    metrics = evaluate_model(resolved, prepared, workdir / f"{tag}-model")
    train_seconds = frozen.train_seconds + frozen.extra.get("feature_seconds", 0.0) + unfrozen.train_seconds
    return {
        "strategy": chosen.strategy,
        "metrics": metrics,
        "calibration": calibration,
        "seconds_end_to_end": seconds,
        "train_seconds": train_seconds,
        "unfrozen_samples_per_second": unfrozen.samples_per_second,
        "rows": prepared.rows,
        "stages": {"frozen": frozen.as_dict(), "unfrozen": unfrozen.as_dict()},
    }, prepared


def reuters(workdir: Path, train_rows: int | None, test_rows: int | None, variants: dict | None = None) -> dict:
    data = write_inputs("reuters", workdir, train_rows, test_rows)
    config = validate_config({"task": "multilabel", "data": data, "backbone": {"candidates": [BACKBONE]}})
    runtime = runtime_for(config.training)
    results = {"machine": machine(), "precision": runtime.precision}
    results["ours"], prepared = run_ours(config, workdir)
    print("ours", _headline(results["ours"]["metrics"]), f"{results['ours']['train_seconds']:.0f} s", flush=True)
    frames = {split: prepared.frame(split) for split in ("train", "validation", "test")}
    names = prepared.labels
    truth = {split: label_matrix(frame[LABEL].to_numpy(), len(names)) for split, frame in frames.items()}
    evaluated = {"validation": frames["validation"], "test": frames["test"]}
    if os.environ.get("TASKS_SKIP_HF"):  # a rerun for raw outputs: HF's figures come from the full run
        outputs, seconds, speed = {s: np.zeros((len(f), len(names))) for s, f in evaluated.items()}, 0.0, 0.0
    else:
        outputs, seconds, speed = hf_train(frames["train"], evaluated, len(names), True, runtime.precision == "bf16")
    val, test = sigmoid(outputs["validation"]), sigmoid(outputs["test"])
    RAW.update(hf_validation=val, hf_test=test, truth_validation=truth["validation"], truth_test=truth["test"])
    for split in ("validation", "test"):  # ours: raw logits of the saved model (temperatures are in its meta)
        RAW[f"ours_logits_{split}"], _, meta = outputs_for(config, prepared, workdir / "ours-model", split)
    RAW["ours_temperatures"] = np.asarray(meta.temperatures or [1.0] * len(names))
    results["ours_every_label_own_cut"] = {"metrics": own_cuts_only(RAW, truth, names)}  # the rule before pooling
    print("ours_every_label_own_cut", _headline(results["ours_every_label_own_cut"]["metrics"]), flush=True)
    thresholds, _, _ = tune_thresholds(val, truth["validation"], truth["train"].sum(axis=0) > 0)  # ours' rule
    for name, cut in (("hf_bce_0.5", 0.5), ("hf_bce_tuned", thresholds)):
        results[name] = {
            "metrics": multilabel_metrics(truth["test"], test, test >= cut, names),
            "train_seconds": seconds,
            "samples_per_second": speed,
        }
        print(name, _headline(results[name]["metrics"]), f"{seconds:.0f} s", flush=True)
    started = time.perf_counter()
    features = frozen_features(frames, runtime)
    raw, results["frozen_ovr_logreg_tuned"] = one_vs_rest_probe(features, truth, names)
    RAW.update(raw)
    results["frozen_ovr_logreg_tuned"]["feature_seconds"] = time.perf_counter() - started
    print("frozen_ovr_logreg_tuned", _headline(results["frozen_ovr_logreg_tuned"]["metrics"]), flush=True)
    peers = ("hf_bce_0.5", "hf_bce_tuned", "frozen_ovr_logreg_tuned")
    strongest = max(peers, key=lambda p: results[p]["metrics"]["f1_macro"])
    margin = results["ours"]["metrics"]["f1_macro"] - results[strongest]["metrics"]["f1_macro"]
    results["verdict"] = {"strongest_peer": strongest, "macro_f1_margin_points": 100 * margin, "target_points": 5.0}
    results["rows"], results["labels"] = prepared.rows, len(names)
    run_variants(results, config, workdir, variants)
    return results


def mrpc(workdir: Path, train_rows: int | None, test_rows: int | None, variants: dict | None = None, **hf) -> dict:
    """``hf``: ``seeds`` (HF Trainer runs, one per seed: the verdict compares with their mean) and
    ``precision`` ("same": ours' precision; "fp32")."""
    data = write_inputs("mrpc", workdir, train_rows, test_rows)
    config = validate_config({"data": data, "backbone": {"candidates": [BACKBONE]}})
    runtime = runtime_for(config.training)
    hf_bf16 = runtime.precision == "bf16" and hf.get("precision", "same") == "same"
    results = {"machine": machine(), "precision": runtime.precision, "hf_precision": "bf16" if hf_bf16 else "fp32"}
    results["ours"], prepared = run_ours(config, workdir)
    print("ours", _headline(results["ours"]["metrics"]), f"{results['ours']['train_seconds']:.0f} s", flush=True)
    whole_train = pd.concat([prepared.frame("train"), prepared.frame("validation")], ignore_index=True)
    test = prepared.frame("test")
    truth = test[LABEL].to_numpy()
    results["ours"]["metrics"]["f1_positive"] = metrics_f1(
        truth, _our_predictions(workdir / "ours-model", config, prepared)
    )
    runs = []
    for seed in hf.get("seeds", [42]):
        outputs, seconds, speed = hf_train(whole_train, {"test": test}, len(prepared.labels), False, hf_bf16, seed)
        metrics = classification_metrics(truth, outputs["test"], prepared.labels)
        metrics["f1_positive"] = metrics_f1(truth, outputs["test"].argmax(1))
        runs.append({"seed": seed, "metrics": metrics, "train_seconds": seconds, "samples_per_second": speed})
        print(f"hf_trainer seed {seed}", _headline(metrics), f"{seconds:.0f} s", flush=True)
    results["hf_trainer_runs"] = runs
    results["verdict"] = {"majority_class_accuracy": float(np.mean(truth == np.bincount(truth).argmax()))}
    if runs:  # `--hf-seeds` with no seed: ours and its variants only
        results["hf_trainer"] = runs[0]
        hf_accuracy = float(np.mean([r["metrics"]["accuracy"] for r in runs]))
        margin = results["ours"]["metrics"]["accuracy"] - hf_accuracy
        results["verdict"].update(hf_accuracy_mean=hf_accuracy, accuracy_margin_points=100 * margin, target_points=1.0)
    results["rows"] = prepared.rows
    run_variants(results, config, workdir, variants)
    return results


def run_variants(results: dict, config, workdir: Path, variants: dict | None) -> None:
    """Other settings of ours on the same rows, after the peers: ``results["ours_NAME"]``."""
    for name, override in (variants or {}).items():
        results[f"ours_{name}"], _ = run_ours(variant_config(config, override), workdir, f"ours-{name}")
        print(f"ours_{name}", _headline(results[f"ours_{name}"]["metrics"]), flush=True)


def variant_config(config, override: dict):
    """``config`` with a variant's settings: ``{"training": …, "backbone": …}`` replaces those
    sections; any other mapping is the training section."""
    sections = override if {"training", "backbone"} >= set(override) and override else {"training": override}
    return validate_config({**config.model_dump(mode="json"), **sections})


def own_cuts_only(raw: dict, truth: dict, names: list[str]) -> dict:
    """Ours' test metrics under the rule before pooled thresholds: every trained label with a
    positive validation row gets its own F1-maximising cut, however few rows it has; others 0.5."""
    from finetune_core.metrics.multilabel import best_threshold

    val, test = (sigmoid(raw[f"ours_logits_{s}"] / raw["ours_temperatures"]) for s in ("validation", "test"))
    cuts = np.full(len(names), 0.5)
    for j in np.flatnonzero(truth["train"].sum(axis=0) > 0):
        cut = best_threshold(val[:, j], truth["validation"][:, j] > 0.5)
        cuts[j] = cuts[j] if cut is None else cut
    return multilabel_metrics(truth["test"], test, test >= cuts, names)


def metrics_f1(targets: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(targets, predicted))


def _our_predictions(model_dir: Path, config, prepared) -> np.ndarray:
    outputs, _, _ = outputs_for(config, prepared, model_dir, "test")
    return outputs.argmax(axis=1)


def _headline(metrics: dict) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE if k in metrics)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["mrpc", "reuters"])
    parser.add_argument("--train-rows", type=int, default=None, help="seeded subset of train (default: all)")
    parser.add_argument("--test-rows", type=int, default=None, help="seeded subset of test (default: all)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--raw", type=Path, default=None, help="save every method's raw outputs here (.npz)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='NAME=JSON: also run ours with these training settings, e.g. pos-balanced=\'{"pos_weight": "balanced"}\' '
        '(or {"training": …, "backbone": …}: those sections)',
    )
    parser.add_argument(
        "--hf-seeds", type=int, nargs="*", default=[42], help="mrpc: one HF Trainer run per seed (none: no HF run)"
    )
    parser.add_argument("--hf-precision", choices=["same", "fp32"], default="same", help="mrpc: HF's precision")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["FINETUNE_CACHE"] = str(Path(scratch) / "cache")  # no feature-cache hits from earlier runs
        run = {"mrpc": mrpc, "reuters": reuters}[options.task]
        variants = {v.split("=", 1)[0]: json.loads(v.split("=", 1)[1]) for v in options.variant}
        hf = {"seeds": options.hf_seeds, "precision": options.hf_precision} if options.task == "mrpc" else {}
        result = run(Path(scratch), options.train_rows, options.test_rows, variants, **hf)
    if options.raw and RAW:
        np.savez_compressed(options.raw, **RAW)
    result["machine_after"] = machine()["load"]
    result["command"] = invocation("bench.task_kinds")
    path = results_file(EXPERIMENT[options.task], f"tasks-{options.task}{options.tag}.json")
    path.write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(result.get("verdict"), indent=1), "->", path)
