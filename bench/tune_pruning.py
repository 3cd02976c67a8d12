"""What pruning gave up, read from a paired `bench.tune` results file (the unpruned sweep ran the pruned
sweep's own points, trial for trial), and what other median-pruner settings would have done on the same
trials.

    python -m bench.tune_pruning bench/results/hyperparameter-search/tune-sst2-pruning-paired.json

Per seed: trial seconds pruned and unpruned, the saving, each sweep's best trial and whether they are the
same point. Then a replay of Optuna's median pruner over the unpruned trials' per-epoch validation scores,
in trial order, for a few settings (``n_startup_trials``, ``n_warmup_steps``): the share of trial time it
would save (a pruned trial costs the share of its epochs it ran), which trials it stops (the default
setting's should be the ones the pruned sweep stopped: the replay's check) and whether the sweep's best
trial survives; where the file has each trial's per-epoch validation loss (``bench.tune --points-from``), the
same settings again with the pruner hearing the loss instead of the accuracy (the trial's score stays its
accuracy). A replay, not a run: TPE would have proposed the same points only where its best trials are the
same. Prints a table and writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# (n_startup_trials, n_warmup_steps, asked at the last epoch): the sweeps ran (5, 0, True); the default since
# is (5, 0, False)
SETTINGS = [(5, 0, True), (5, 0, False), (5, 2, False), (3, 0, False), (8, 0, False)]


def curve_of(trial: dict, signal: str) -> list[float]:
    """The per-epoch values the pruner would hear: validation accuracy (what the sweeps report), or the
    validation loss negated (larger is better, as the study maximises)."""
    return trial["epochs"] if signal == "accuracy" else [-loss for loss in trial["epoch_losses"]]


def replay(trials: list[dict], startup: int, warmup: int, at_last: bool, signal: str = "accuracy") -> dict:
    """Optuna's ``MedianPruner`` (maximise) over complete per-epoch curves, trials one after the other:
    a trial stops at the first epoch (numbered from 1, the step the pipeline reports) not under
    ``warmup`` where its best score so far is under the median of the trials that completed before it
    at that epoch, once ``startup`` have; at its last epoch only if ``at_last``."""
    completed: list[list[float]] = []
    spent, full, kept, stopped_numbers = 0.0, 0.0, [], []
    for trial in trials:
        curve, seconds = curve_of(trial, signal), trial["seconds"]
        stopped = None
        for step in range(max(warmup - 1, 0), len(curve) - (0 if at_last else 1)):  # list index = epoch - 1
            others = [c[step] for c in completed if len(c) > step]
            if len(completed) >= startup and others and max(curve[: step + 1]) < np.median(others):
                stopped = step
                break
        full += seconds
        if stopped is None:
            completed.append(curve)
            kept.append(trial)
            spent += seconds
        else:
            spent += seconds * (stopped + 1) / len(curve)
            stopped_numbers.append(trial["number"])
    best_all = max(trials, key=lambda t: t["value"])
    best_kept = max(kept, key=lambda t: t["value"])
    return {
        "saved": 1 - spent / full,
        "pruned": stopped_numbers,
        "best kept": best_kept["value"] == best_all["value"],  # a tie with the best counts as kept
    }


def paired_rows(run: dict) -> dict:
    pruned, unpruned = run["ours"], run["unpruned"]
    by_number = {t["number"]: t for t in unpruned["trial_list"]}
    gave_up = [
        by_number[t["number"]]["value"]
        for t in pruned["trial_list"]
        if t["state"] == "pruned" and t["number"] in by_number
    ]
    return {
        "seed": run["seed"],
        "paired": unpruned.get("paired"),
        "trials": len(pruned["trial_list"]),
        "pruned": [t["number"] for t in pruned["trial_list"] if t["state"] == "pruned"],
        "trial s pruned": round(pruned["trial_seconds"]),
        "trial s unpruned": round(unpruned["trial_seconds"]),
        "saved": round(1 - pruned["trial_seconds"] / unpruned["trial_seconds"], 3),
        "best validation pruned / unpruned": (pruned["best_validation"], unpruned["best_validation"]),
        "same winner": pruned["best_params"] == unpruned["best_params"],
        "test pruned / unpruned": (pruned["test_accuracy"], unpruned["test_accuracy"]),
        "pruned trials' unpruned finals": sorted(round(v, 3) for v in gave_up if v is not None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    runs = json.loads(parser.parse_args().results.read_text())["runs"]
    for run in runs:
        print(json.dumps(paired_rows(run)))
        trials = sorted(
            (t for t in run["unpruned"]["trial_list"] if t["state"] == "complete"), key=lambda t: t["number"]
        )
        signals = ["accuracy"] + (["loss"] if all(t.get("epoch_losses") for t in trials) else [])
        for signal in signals:
            for startup, warmup, at_last in SETTINGS:
                shown = f"{signal}: startup={startup} warmup={warmup} last epoch asked={at_last}"
                print(f"  replay {shown}:", replay(trials, startup, warmup, at_last, signal))


if __name__ == "__main__":
    main()
