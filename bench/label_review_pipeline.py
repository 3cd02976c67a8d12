"""Label review through whole runs (issue 45): what planted flips cost the model a run registers (the frozen
head *and* the unfrozen stage, at the defaults), and how much of it `training.drop_suspect_labels` wins back.

    python -m bench.label_review_pipeline [--dataset sst2|mrpc] [--rows 2000] [--seeds 0 1 2]
                                          [--shares 0.05 0.1] [--as-given-only] [--out NAME]

`bench.label_review` measures the accuracy side on a linear head over frozen features, which a strongly
regularised head barely lets noise move; a run's served model is the fine-tuned one, which fits its labels.
Per seed, on the same seeded rows as `bench.tune` (the bundled all-MiniLM-L6-v2, fp32, the flow's defaults
otherwise): one `finetune` run on the clean labels; per share, ``share`` of the train file's labels flipped at
random (seeded by the seed; the validation rows a run holds out of them are as noisy as the rest, as a
user's would be), then one run on them as given and one with ``training.drop_suspect_labels: true``. Test
accuracy of each, the share of the lost accuracy dropping wins back, and the run's own review read from its
``review/suspect_labels.csv``: flagged rows, precision and recall against the flips in the train split;
``second_reading``: the same for ``review/suspect_labels_training.csv`` (stage 2's area under the margin),
with ``precision_at_recall_0.6`` ranking every train row by its margin (``review/training_margins.npz``).
The training seed is the same in the three runs of a seed; ``--as-given-only`` runs only the noisy runs
(the reviews, no accuracies to compare). Writes bench/results/label-review/label-review-pipeline-<dataset>.json
(``--out``: another name there); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.label_review import precision_at_recall_of
from bench.machine import machine
from bench.paths import invocation, results_file
from bench.tune import DATASETS, data_files, raw_config, start_flow_api
from finetune_core.evaluation.suspect_labels import SUSPECTS_FILE, TRAINING_SUSPECTS_FILE
from finetune_core.run_layout import RunLayout
from finetune_core.training.margins import MARGINS_FILE, read_margins


def flipped_file(files: dict[str, Path], share: float, seed: int, out: Path) -> np.ndarray:
    """Writes the train file with ``share`` of its binary labels flipped; returns the flipped positions."""
    train = pd.read_json(files["train"], lines=True)
    rows = np.random.default_rng(seed).choice(len(train), size=int(round(share * len(train))), replace=False)
    train.loc[rows, "label"] = 1 - train.loc[rows, "label"]
    train.to_json(out, orient="records", lines=True)
    return rows


def text_key(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    return frame[columns].astype(str).agg("\x1f".join, axis=1)


def flips_in_train(run_dir: Path, clean: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, int]:
    """(positions of the flipped rows in the run's prepared train split, its row count): validation held out."""
    truth = dict(zip(text_key(clean, columns), clean["label"].astype(str), strict=True))
    train = pd.read_parquet(RunLayout(run_dir).data / "train.parquet")
    renamed = train.rename(columns=dict(zip(("text", "text_pair"), columns, strict=False)))
    flipped = renamed["label"].astype(str) != text_key(renamed, columns).map(truth)
    return np.flatnonzero(flipped.to_numpy()), len(train)


def review_found(run_dir: Path, flips: tuple[np.ndarray, int], file: str = SUSPECTS_FILE) -> dict:
    """Precision and recall of the run's flagged rows (in ``file``) against ``flips`` (``flips_in_train``)."""
    flipped, train_rows = flips
    suspects = pd.read_csv(run_dir / "review" / file, dtype=str, keep_default_na=False)
    hit = len(np.intersect1d(suspects["row"].astype(int), flipped))
    return {
        "flagged": len(suspects),
        "train_rows": train_rows,
        "flipped_in_train": len(flipped),
        "precision": hit / max(len(suspects), 1),
        "recall": hit / max(len(flipped), 1),
    }


def ranked_by_margin(run_dir: Path, flipped: np.ndarray) -> dict:
    """The second reading's every train row ranked by its area under the margin: precision at recall 0.6; per
    epoch, the same ranking by that epoch's margins and the flipped rows' mean margin."""
    margins = read_margins(run_dir / "review" / MARGINS_FILE)[0]
    return {
        "precision_at_recall_0.6": precision_at_recall_of(np.nanmean(margins, axis=0), flipped, 0.6),
        "by_epoch": [
            {
                "precision_at_recall_0.6": precision_at_recall_of(epoch, flipped, 0.6),
                "flipped_mean_margin": float(np.nanmean(epoch[flipped])),
                "others_mean_margin": float(np.nanmean(np.delete(epoch, flipped))),
            }
            for epoch in margins
        ],
    }


def one_run(raw: dict, drop: bool) -> tuple[float, Path, float]:
    from finetune_core.config.loading import validate_config
    from flows.finetune import finetune

    raw = {**raw, "training": {**raw["training"], "drop_suspect_labels": drop}}
    started = time.perf_counter()
    result = finetune(validate_config(raw))
    return result.metrics["accuracy"], Path(result.run_dir), time.perf_counter() - started


def one_seed(dataset: str, rows: int, seed: int, shares: list[float], as_given_only: bool = False) -> list[dict]:
    columns = list(DATASETS[dataset]["columns"].values())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = data_files(dataset, rows, work)
        clean = pd.read_json(files["train"], lines=True)
        if not as_given_only:
            clean_accuracy, _, _ = one_run(raw_config(dataset, files, work / "clean", seed, {}), drop=False)
        records = []
        for share in shares:
            noisy = {**files, "train": work / f"train-{share}.jsonl"}
            flipped = flipped_file(files, share, seed, noisy["train"])
            given, run_dir, seconds = one_run(raw_config(dataset, noisy, work / f"given-{share}", seed, {}), False)
            flips = flips_in_train(run_dir, clean, columns)
            record = {
                "share": share,
                "seed": seed,
                "flipped": len(flipped),
                "run_seconds": seconds,
                "review": review_found(run_dir, flips),
                "second_reading": {
                    **review_found(run_dir, flips, TRAINING_SUSPECTS_FILE),
                    **ranked_by_margin(run_dir, flips[0]),
                },
                "test_accuracy": {"as_given": given},
            }
            if not as_given_only:
                dropped, _, _ = one_run(raw_config(dataset, noisy, work / f"dropped-{share}", seed, {}), True)
                record["test_accuracy"] = {"clean": clean_accuracy, "as_given": given, "flagged_dropped": dropped}
                lost = clean_accuracy - given
                record["recovered_share"] = (dropped - given) / lost if lost > 0 else None
            records.append(record)
            print(json.dumps(records[-1]), flush=True)
    return records


def table_of(dataset: str, runs: list[dict]) -> list[dict]:
    """Per share: a row per seed and their mean; the mean's recovered share is that of the mean
    accuracies (a seed where the noise cost nothing has no share of its own)."""
    rows = []
    for share in sorted({run["share"] for run in runs}):
        of_share = pd.json_normalize([run for run in runs if run["share"] == share])
        of_share = of_share.drop(columns=["run_seconds", "second_reading.by_epoch"], errors="ignore")
        rows += [{"dataset": dataset, **row, "seed": str(row["seed"])} for row in of_share.to_dict("records")]
        mean = of_share.drop(columns=["seed", "recovered_share"], errors="ignore").mean()
        if "test_accuracy.clean" in mean:
            lost = mean["test_accuracy.clean"] - mean["test_accuracy.as_given"]
            mean["recovered_share"] = (mean["test_accuracy.flagged_dropped"] - mean["test_accuracy.as_given"]) / lost
        rows.append({"dataset": dataset, "seed": "mean", **mean.to_dict()})
    return [{k: _number(v) for k, v in row.items()} for row in rows]


def epoch_table(runs: list[dict]) -> list[dict]:
    """The second reading epoch by epoch, means over the runs: how each epoch's margins rank the flips."""
    epochs = [run["second_reading"]["by_epoch"] for run in runs if "by_epoch" in run["second_reading"]]
    if not epochs:
        return []
    return [
        {"epoch": k + 1, **{key: _number(float(np.mean([e[k][key] for e in epochs]))) for key in epochs[0][k]}}
        for k in range(min(map(len, epochs)))
    ]


def _number(value):
    if not isinstance(value, float):  # numpy's floats are floats too
        return value
    return None if np.isnan(value) else round(float(value), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--as-given-only", action="store_true", help="only the runs on the noisy labels")
    parser.add_argument("--out", default=None, help="file name in bench/results/label-review/")
    args = parser.parse_args()
    start_flow_api()
    out = results_file("label-review", args.out or f"label-review-pipeline-{args.dataset}.json")
    result = {"command": invocation("bench.label_review_pipeline"), "machine": machine(), "rows": args.rows}
    runs: list[dict] = []
    for seed in args.seeds:  # written after each seed: a long run keeps what it measured
        runs += one_seed(args.dataset, args.rows, seed, args.shares, args.as_given_only)
        table = table_of(args.dataset, runs)
        payload = {**result, "table": table, "by_epoch": epoch_table(runs), "runs": runs}
        out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
