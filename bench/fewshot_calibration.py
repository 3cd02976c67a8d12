"""Few-shot calibration of the contrastive recipe: which out-of-fold logits give a temperature that
calibrates the served head (issue 45)?

    python -m bench.fewshot_calibration [--datasets sst2 mrpc] [--per-class 8 16 64] [--seeds 0 1 2]
                                        [--folds 2] [--out FILE] [--sources ...] [--keep-logits]

For each data set, size and seed: the class-balanced rows bench/fewshot.py draws, ``strategy: auto``
resolved as a run does (the contrastive recipe, validation rows folded into train), the encoder
tuned on pairs and the head fitted, as the flow runs them. The served head's test logits are scored
(accuracy, ECE, NLL) with no temperature and with the temperature fitted on each source of
out-of-fold logits over the train rows:

- ``tuned``: a 5-fold linear head over the tuned encoder's features (what the pipeline did: that
  encoder saw every row, the held-out fold's included);
- ``original``: a 5-fold head over the original backbone's features (a different model's logits);
- ``cross_fit``: per fold (``--folds``), an encoder tuned on the other folds' rows only, the head
  fitted on their features with the run's C, the fold's logits (finetune_core/evaluation/cross_fit.py
  until 2026-12-04);
- ``cross_fit_matched``: the same with each fold head's C scaled by the rows the served head has over
  it (its penalty weighs against its loss as the served head's does: the pipeline since).

``served`` / ``served_matched``: what the pipeline serves from each (``calibration_step.out_of_fold_temperature``:
softening fitted, sharpening only past the majority test and under a prior on log T). Files written before
2026-12-05: the plain fit where those logits beat the majority class (``calibration_step.beats_majority``), else 1.

Each source's own out-of-fold accuracy is recorded: how right it believes the model to be. ``--sources``: only
these (the cross-fits take minutes at 64 per class); ``--keep-logits``: each run's test and out-of-fold logits in
bench/results/label-review/logits/<out's stem>/<dataset>/<per class>-<seed>.npz, for `bench.temperature_rules`.
Writes bench/results/label-review/label-review-contrastive-ece.json (a ``table``: means over seeds).
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

from bench import fewshot
from bench.label_review import summarise
from bench.machine import machine
from bench.paths import invocation, results_file
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.cross_fit import cross_fitted_logits
from finetune_core.evaluation.label_review import out_of_fold_outputs, softmax, usable_folds
from finetune_core.evaluation.suspect_labels import train_features
from finetune_core.metrics.calibration import expected_calibration_error, fit_temperature
from finetune_core.model.backbone import resolve_backbone
from finetune_core.training import frozen_stage, recipe
from finetune_core.training.calibration_step import out_of_fold_temperature
from finetune_core.training.contrastive import train_contrastive
from finetune_core.training.encoded_splits import outputs_for
from finetune_core.training.stage_setup import StageInputs


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    probabilities = softmax(np.asarray(logits) / temperature)
    return float(-np.log(np.clip(probabilities[np.arange(len(targets)), targets], 1e-12, None)).mean())


def head_oof(config, prepared, encoder: str) -> tuple[np.ndarray, np.ndarray]:
    """5-fold out-of-fold logits of the linear head over ``encoder``'s train features."""
    features, targets, _ = train_features(config, prepared, encoder)
    targets = np.asarray(targets)
    folds = usable_folds(targets, "classification")
    logits = out_of_fold_outputs(
        features,
        targets,
        "classification",
        outputs=len(prepared.labels),
        folds=folds,
        regularization=config.training.frozen.regularization,
        seed=config.training.seed,
    )
    return logits, targets


SOURCES = ("tuned", "original", "cross_fit", "cross_fit_matched")


def one_run(
    work: Path,
    per_class: int,
    seed: int,
    folds: int,
    sources: tuple[str, ...] = SOURCES,
    keep_logits: Path | None = None,
) -> dict:
    train, test = fewshot.write_rows(work, per_class, seed)
    tag = work / f"run-{per_class}-{seed}"
    config = fewshot.make_config(train, test, seed, "auto", "fp32")
    config, chosen, prepared = recipe.resolve(config, prepare_splits(config, tag / "data"))
    assert config.training.strategy == "contrastive", chosen.reason
    backbone = resolve_backbone(fewshot.BACKBONE)
    train_contrastive(StageInputs(config, prepared, backbone, tag / "tuned"))
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tag / "tuned"), tag / "model"))
    test_logits, test_y, _ = outputs_for(config, prepared, tag / "model", "test")
    test_y = np.asarray(test_y)
    started = time.perf_counter()
    c = config.training.frozen.regularization
    make = {
        "tuned": lambda: head_oof(config, prepared, str(tag / "tuned")),
        "original": lambda: head_oof(config, prepared, backbone),
        "cross_fit": lambda: cross_fitted_logits(config, prepared, backbone, tag / "cf", folds, regularization=c),
        "cross_fit_matched": lambda: cross_fitted_logits(config, prepared, backbone, tag / "cf-m", folds),
    }
    sources = {name: make[name]() for name in sources}
    cross_fit_seconds = time.perf_counter() - started
    accuracy = float((test_logits.argmax(axis=1) == test_y).mean())
    record = {
        "per_class": per_class,
        "seed": seed,
        "train_rows": prepared.rows["train"],
        "accuracy": accuracy,
        "majority": float(np.bincount(test_y).max() / len(test_y)),
        "ece.none": expected_calibration_error(test_logits, test_y),
        "nll.none": nll(test_logits, test_y),
        "seconds.sources": cross_fit_seconds,
    }
    for name, (logits, targets) in sources.items():
        temperature = fit_temperature(logits, targets)
        record[f"oof_accuracy.{name}"] = float((logits.argmax(axis=1) == targets).mean())
        record[f"temperature.{name}"] = temperature
        record[f"ece.{name}"] = expected_calibration_error(test_logits, test_y, temperature)
        record[f"nll.{name}"] = nll(test_logits, test_y, temperature)
    for source, served in (("cross_fit", "served"), ("cross_fit_matched", "served_matched")):
        if source not in sources:
            continue
        temperature = out_of_fold_temperature(*sources[source])
        temperature = 1.0 if temperature is None else temperature
        record[f"temperature.{served}"] = temperature
        record[f"ece.{served}"] = expected_calibration_error(test_logits, test_y, temperature)
    if keep_logits is not None:  # what bench.temperature_rules replays other rules on
        arrays = {f"{name}.{part}": a for name, pair in sources.items() for part, a in zip(("logits", "targets"), pair)}
        np.savez_compressed(
            keep_logits / f"{per_class}-{seed}.npz", test_logits=test_logits, test_targets=test_y, **arrays
        )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "mrpc"], choices=sorted(fewshot.DATASETS))
    parser.add_argument("--per-class", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=2, help="cross-fit folds (the pipeline's CROSS_FIT_FOLDS)")
    parser.add_argument("--out", default="label-review-contrastive-ece.json")
    parser.add_argument(
        "--sources", nargs="+", default=list(SOURCES), choices=SOURCES, help="out-of-fold logits to fit on"
    )
    parser.add_argument("--keep-logits", action="store_true", help="test and out-of-fold logits, per run, as .npz")
    args = parser.parse_args()
    result = {"command": invocation("bench.fewshot_calibration"), "machine": machine(), "folds": args.folds}
    table, runs = [], {}
    for name in args.datasets:
        fewshot.DATASET = fewshot.DATASETS[name]
        runs[name] = []
        keep = None
        if args.keep_logits:
            keep = results_file("label-review", f"logits/{Path(args.out).stem}/{name}")
            keep.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            for per_class in args.per_class:
                for seed in args.seeds:
                    record = one_run(Path(scratch), per_class, seed, args.folds, tuple(args.sources), keep)
                    print(json.dumps({"dataset": name, **record}), flush=True)
                    runs[name].append(record)
                table += [{"dataset": name, **row} for row in summarise(runs[name], ["per_class"])[-1:]]
                path = results_file("label-review", args.out)
                path.write_text(json.dumps({**result, "table": table, "runs": runs}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
