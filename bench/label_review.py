"""Label review (issue 45): are planted label flips found, does dropping them help, and do
out-of-fold temperatures calibrate few-shot heads?

    python -m bench.label_review [--datasets sst2 mrpc] [--rows 2000] [--seeds 0 1 2]
                                 [--per-class 8 16 64] [--fewshot-seeds 0 1 2 3 4] [--regularization C]

Per data set: ``--rows`` seeded train rows (SST-2 sentences, MRPC pairs) and the test split; their
frozen features from the bundled all-MiniLM-L6-v2 as the pipeline extracts them (pooling resolved
as in a run, the feature cache), once: label noise does not change features, so every condition
below reuses them. Noise: 5 % and 10 % of the train labels flipped at random (seeded), and
"realistic" flips, rows drawn in proportion to a clean out-of-fold model's probability of their
most confused other class and flipped to it. For each: the pipeline's review (5-fold out-of-fold
linear head, confident learning) against cleanlab's ``find_label_issues`` (default
``prune_by_noise_rate``) on 5-fold ``cross_val_predict`` probabilities of a plain scikit-learn
LogisticRegression over the same features: precision and recall of the flagged rows at the
flagged count; then test accuracy of the head trained on the labels as given, with the flagged
rows dropped, and on the clean labels (the share of the lost accuracy dropping recovers).
``--regularization``: our head's C (the pipeline's default, 1). Few-shot calibration:
``--per-class`` rows per class, the head fitted on them, test ECE with no
temperature and with the one fitted on their out-of-fold logits. Writes
bench/results/label-review/label-review.json.
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
from bench.paths import SHARED_DATA, invocation, results_file
from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.label_review import (
    fit_linear_head,
    out_of_fold_outputs,
    review_outputs,
    softmax,
    usable_folds,
)
from finetune_core.evaluation.suspect_labels import train_features
from finetune_core.metrics.calibration import expected_calibration_error, fit_temperature
from finetune_core.model.backbone import resolve_backbone
from finetune_core.training.losses import targets_tensor

BACKBONE = "bundled:all-MiniLM-L6-v2"
DATASETS = {
    "sst2": {"files": ("sst2/train.tsv", "sst2/test.tsv"), "text": "sentence", "pair": None},
    "mrpc": {"files": ("mrpc/train.jsonl", "mrpc/test.jsonl"), "text": "sentence1", "pair": "sentence2"},
}
NOISE = [("random", 0.05), ("random", 0.10), ("realistic", 0.10)]


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False)


def features(name: str, rows: int, work: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train features, train labels, test features, test labels) through the pipeline's own path."""
    spec = DATASETS[name]
    train_file, test_file = (SHARED_DATA / f for f in spec["files"])
    train = _read(train_file).sample(n=min(rows, len(_read(train_file))), random_state=0)
    paths = {"train": work / f"{name}-train.jsonl", "test": work / f"{name}-test.jsonl"}
    train.to_json(paths["train"], orient="records", lines=True)
    _read(test_file).to_json(paths["test"], orient="records", lines=True)
    data = {"train": str(paths["train"]), "test": str(paths["test"]), "text_column": spec["text"]}
    data["validation"] = str(paths["test"])  # every sampled row stays in train, in order
    if spec["pair"]:
        data["text_pair_column"] = spec["pair"]
    config = validate_config({"data": data, "validation": {"max_leakage_fraction": 1.0}})
    prepared = prepare_splits(config, work / name)
    backbone = resolve_backbone(BACKBONE)
    x_train, y_train, _ = train_features(config, prepared, backbone)
    as_test = prepared.model_copy(update={"paths": {**prepared.paths, "train": prepared.paths["test"]}})
    x_test, y_test, _ = train_features(config, as_test, backbone)
    return x_train, np.asarray(y_train), x_test, np.asarray(y_test)


def flip(labels: np.ndarray, kind: str, share: float, clean_probabilities: np.ndarray, seed: int) -> np.ndarray:
    """Noisy labels: ``share`` of the rows flipped, at random or toward their most confused class."""
    rng = np.random.default_rng(seed)
    classes = clean_probabilities.shape[1]
    count = int(round(share * len(labels)))
    noisy = labels.copy()
    if kind == "random":
        rows = rng.choice(len(labels), size=count, replace=False)
        noisy[rows] = (labels[rows] + rng.integers(1, classes, size=count)) % classes
        return noisy
    other = clean_probabilities.copy()
    other[np.arange(len(labels)), labels] = 0.0
    weight = other.max(axis=1) + 1e-9
    rows = rng.choice(len(labels), size=count, replace=False, p=weight / weight.sum())
    noisy[rows] = other[rows].argmax(axis=1)
    return noisy


def cleanlab_flags(x: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(LogisticRegression(max_iter=1000), x, labels, cv=folds, method="predict_proba")
    return np.flatnonzero(find_label_issues(labels, probabilities))


def head_accuracy(x: np.ndarray, labels: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, c: float) -> float:
    import torch

    head = fit_linear_head(torch.as_tensor(x), targets_tensor(labels, "classification"), "classification", 2, c)
    with torch.no_grad():
        predicted = head(torch.as_tensor(x_test, dtype=torch.float64)).argmax(dim=1).numpy()
    return float((predicted == y_test).mean())


def precision_recall(flagged: np.ndarray, flipped: np.ndarray) -> dict:
    hit = len(np.intersect1d(flagged, flipped))
    return {
        "flagged": int(len(flagged)),
        "precision": hit / max(len(flagged), 1),
        "recall": hit / max(len(flipped), 1),
    }


def precision_at_recall(probabilities: np.ndarray, given: np.ndarray, flipped: np.ndarray, recall: float) -> float:
    """Rows ranked by the probability of their given label, lowest first: the precision at the first
    rank that holds ``recall`` of the flips (the best any flagged count could do on this ranking)."""
    return precision_at_recall_of(probabilities[np.arange(len(given)), given], flipped, recall)


def precision_at_recall_of(scores: np.ndarray, flipped: np.ndarray, recall: float) -> float:
    """Rows ranked by ``scores``, lowest first: the precision at the first rank that holds ``recall`` of the flips."""
    hits = np.cumsum(np.isin(np.argsort(scores, kind="stable"), flipped))
    at = int(np.searchsorted(hits, recall * len(flipped))) + 1
    return float(hits[at - 1] / at)


def noise_condition(data, kind: str, share: float, seed: int, clean_probabilities, c: float) -> dict:
    x, y, x_test, y_test = data
    noisy = flip(y, kind, share, clean_probabilities, seed)
    flipped = np.flatnonzero(noisy != y)
    started = time.perf_counter()
    outputs = out_of_fold_outputs(x, noisy, "classification", outputs=2, regularization=c, seed=seed)
    ours = review_outputs(outputs, noisy, "classification").rows
    seconds = time.perf_counter() - started
    theirs = cleanlab_flags(x, noisy, seed)
    keep = np.setdiff1d(np.arange(len(y)), ours)
    accuracy = {
        "clean": head_accuracy(x, y, x_test, y_test, c),
        "as_given": head_accuracy(x, noisy, x_test, y_test, c),
        "flagged_dropped": head_accuracy(x[keep], noisy[keep], x_test, y_test, c),
    }
    lost = accuracy["clean"] - accuracy["as_given"]
    return {
        "noise": kind,
        "share": share,
        "seed": seed,
        "flipped": int(len(flipped)),
        "ours": {
            **precision_recall(ours, flipped),
            "precision_at_recall_0.6": precision_at_recall(softmax(outputs), noisy, flipped, 0.6),
        },
        "cleanlab_logreg": precision_recall(theirs, flipped),
        "overlap_with_cleanlab": len(np.intersect1d(ours, theirs)) / max(len(np.union1d(ours, theirs)), 1),
        "review_seconds": seconds,
        "test_accuracy": accuracy,
        "recovered_share": (accuracy["flagged_dropped"] - accuracy["as_given"]) / lost if lost > 0 else None,
    }


def fewshot_calibration(data, per_class: int, seed: int) -> dict:
    """ECE on the test split of a head fitted on ``per_class`` rows per class, without and with
    the temperature fitted on those rows' out-of-fold logits."""
    import torch

    x, y, x_test, y_test = data
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(y == c), size=per_class, replace=False) for c in (0, 1)])
    folds = usable_folds(y[rows], "classification")
    logits = out_of_fold_outputs(x[rows], y[rows], "classification", outputs=2, folds=folds, seed=seed)
    temperature = fit_temperature(logits, y[rows])
    targets = targets_tensor(y[rows], "classification")
    head = fit_linear_head(torch.as_tensor(x[rows]), targets, "classification", 2, 1.0)
    with torch.no_grad():
        test_logits = head(torch.as_tensor(x_test, dtype=torch.float64)).numpy()
    accuracy = float((softmax(test_logits).argmax(axis=1) == y_test).mean())
    return {
        "per_class": per_class,
        "seed": seed,
        "folds": folds,
        "temperature": temperature,
        "accuracy": accuracy,
        "majority": float(max(np.mean(y_test), 1 - np.mean(y_test))),
        "ece_before": expected_calibration_error(test_logits, y_test),
        "ece_after": expected_calibration_error(test_logits, y_test, temperature),
    }


def summarise(runs: list[dict], keys: list[str]) -> list[dict]:
    """Means over seeds, one record per condition."""
    if not runs:
        return []
    frame = pd.json_normalize(runs)
    numeric = frame.drop(columns=[c for c in ("seed",) if c in frame]).select_dtypes("number")
    grouped = pd.concat([frame[keys], numeric.drop(columns=[k for k in keys if k in numeric])], axis=1)
    return grouped.groupby(keys, sort=False).mean().reset_index().round(4).to_dict(orient="records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, nargs="*", default=[8, 16, 64], help="none: no few-shot ECE")
    parser.add_argument("--fewshot-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--regularization", type=float, default=1.0, help="C of our head (the pipeline's default 1)")
    parser.add_argument("--out", default="label-review.json")
    args = parser.parse_args()
    result = {"command": invocation("bench.label_review"), "machine": machine(), "rows": args.rows, "datasets": {}}
    result["regularization"] = args.regularization
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets:
            started = time.perf_counter()
            data = features(name, args.rows, Path(scratch))
            feature_seconds = time.perf_counter() - started
            clean = softmax(out_of_fold_outputs(data[0], data[1], "classification", outputs=2))
            c = args.regularization
            noise = [noise_condition(data, k, s, seed, clean, c) for k, s in NOISE for seed in args.seeds]
            calibration = [fewshot_calibration(data, k, seed) for k in args.per_class for seed in args.fewshot_seeds]
            result["datasets"][name] = {
                "train_rows": len(data[1]),
                "test_rows": len(data[3]),
                "feature_seconds": feature_seconds,
                "noise": summarise(noise, ["noise", "share"]),
                "fewshot_calibration": summarise(calibration, ["per_class"]),
                "runs": {"noise": noise, "fewshot_calibration": calibration},
            }
            print(json.dumps({name: result["datasets"][name]["noise"]}, indent=1), flush=True)
            print(json.dumps({name: result["datasets"][name]["fewshot_calibration"]}, indent=1), flush=True)
    write_results(result, args.out)


def write_results(result: dict, name: str) -> None:
    """Two files with a ``table`` each (the page's tables): flips found and accuracy, and few-shot
    ECE; every run's numbers stay in the first."""
    noise = [{"dataset": d, **row} for d, data in result["datasets"].items() for row in data["noise"]]
    calibration = [
        {"dataset": d, **row} for d, data in result["datasets"].items() for row in data["fewshot_calibration"]
    ]
    common = {key: result[key] for key in ("command", "machine", "rows", "regularization") if key in result}
    for file, table, extra in (
        (name, noise, {"datasets": result["datasets"]}),
        (name.replace(".json", "-fewshot-ece.json"), calibration, {}),
    ):
        if not table:
            continue
        path = results_file("label-review", file)
        path.write_text(json.dumps({**common, "table": table, **extra}, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
