"""Which rule should turn a few-shot run's out-of-fold logits into the temperature it serves? Replayed on
the logits `bench.fewshot_calibration --keep-logits` saved (issue 45).

    python -m bench.temperature_rules FOLDER... [--source cross_fit_matched] [--out FILE]

FOLDER: bench/results/label-review/logits/NAME/DATASET. Per saved run (rows per class, seed): the served head's
test logits and one source's out-of-fold logits over the train rows. Each rule picks a temperature from the
out-of-fold logits alone; the test ECE it gives is scored:

- ``none``: T = 1;
- ``fitted``: the NLL-minimising T (``metrics.calibration.fit_temperature``);
- ``fitted, majority test``: fitted where the out-of-fold predictions beat the majority class
  (``calibration_step.beats_majority``), else 1 (the pipeline's rule until 2026-12-05);
- ``prior sd``: the most probable T under a normal prior on log T with that standard deviation
  (``fit_temperature(prior_sd=…)``), with and without the majority test;
- ``soften only``: the fitted T where it is above 1, else 1;
- ``served``: what the pipeline serves now (``calibration_step.out_of_fold_temperature``: softening fitted,
  sharpening only past the majority test and under the prior, sd 0.5);
- ``test-fitted``: T fitted on the test logits themselves, what no rule can know (the floor a temperature reaches);
- ``fresh rows``: the best case of any rule, not a rule: T fitted on as many rows as the run trained on, drawn
  from the served head's own test logits (held-out rows of the model that serves, which no run has: its
  out-of-fold logits come from other models), mean test ECE over ``FRESH_DRAWS`` seeded draws. What a temperature
  from that many rows can reach at best.

Prints mean test ECE per rule and size, and the share of runs at or under 0.05; ``--out``: the same as a
results file (bench/results/label-review/FILE: a ``table`` of mean test ECE per data set and size, a column per
rule; ``runs``: per rule, the share at or under the target and each run's ECE).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.machine import machine
from bench.paths import invocation, results_file
from finetune_core.metrics.calibration import expected_calibration_error, fit_temperature
from finetune_core.training.calibration_step import beats_majority, out_of_fold_temperature

PRIORS = (0.25, 0.5, 1.0)
TARGET = 0.05
FRESH_DRAWS = 50


def rules(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Each rule's temperature from one run's out-of-fold ``logits`` and ``targets``."""
    beats = beats_majority(logits, targets)
    chosen = {"none": 1.0, "fitted": fit_temperature(logits, targets)}
    chosen["fitted, majority test"] = chosen["fitted"] if beats else 1.0
    for sd in PRIORS:
        chosen[f"prior sd {sd}"] = fit_temperature(logits, targets, prior_sd=sd)
        chosen[f"prior sd {sd}, majority test"] = chosen[f"prior sd {sd}"] if beats else 1.0
    chosen["soften only"] = max(chosen["fitted"], 1.0)
    served = out_of_fold_temperature(logits, targets)
    chosen["served"] = 1.0 if served is None else served
    return chosen


def replay(folder: Path, source: str) -> dict[int, dict[str, list[float]]]:
    """{rows per class: {rule: test ECE per run}} over the folder's ``PER_CLASS-SEED.npz`` files."""
    scores: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.glob("*.npz")):
        per_class, seed = map(int, re.match(r"(\d+)-(\d+)", path.stem).groups())
        saved = np.load(path)
        test_logits, test_targets = saved["test_logits"], saved["test_targets"]
        chosen = rules(saved[f"{source}.logits"], saved[f"{source}.targets"])
        chosen["test-fitted"] = fit_temperature(test_logits, test_targets)
        for rule, temperature in chosen.items():
            scores[per_class][rule].append(expected_calibration_error(test_logits, test_targets, temperature))
        rows = len(saved[f"{source}.targets"])
        scores[per_class]["fresh rows"].append(fresh_rows_ece(test_logits, test_targets, rows, seed=seed))
    return scores


def fresh_rows_ece(logits: np.ndarray, targets: np.ndarray, rows: int, seed: int) -> float:
    """Mean test ECE of the temperature fitted on ``rows`` rows drawn from the test logits (``FRESH_DRAWS``
    draws): the best a temperature fitted on that many of the serving model's own held-out rows does."""
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(FRESH_DRAWS):
        drawn = rng.choice(len(targets), size=rows, replace=False)
        temperature = fit_temperature(logits[drawn], targets[drawn])
        errors.append(expected_calibration_error(logits, targets, temperature))
    return float(np.mean(errors))


def by_rule(folders: list[Path], source: str) -> list[dict]:
    """One row per data set (the folder's name), rows per class and rule: mean test ECE over the runs,
    the share at or under the target, and each run's."""
    rows = []
    for folder in folders:
        for per_class, errors_by_rule in sorted(replay(folder, source).items()):
            for rule, errors in errors_by_rule.items():
                rows.append(
                    {
                        "dataset": folder.name,
                        "per_class": per_class,
                        "runs": len(errors),
                        "rule": rule,
                        "ece": round(float(np.mean(errors)), 4),
                        f"share_at_most_{TARGET}": round(float(np.mean(np.asarray(errors) <= TARGET)), 2),
                        "ece_by_seed": " ".join(f"{e:.3f}" for e in errors),
                    }
                )
    return rows


def pivoted(rows: list[dict]) -> list[dict]:
    """One record per data set and size, a column of mean test ECE per rule: the page's table."""
    table: dict[tuple, dict] = {}
    for row in rows:
        key = (row["dataset"], row["per_class"])
        table.setdefault(key, {"dataset": key[0], "per_class": key[1], "runs": row["runs"]})[row["rule"]] = row["ece"]
    return list(table.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--source", default="cross_fit_matched", help="whose out-of-fold logits the rules read")
    parser.add_argument("--out", help="results file name under bench/results/label-review/")
    args = parser.parse_args()
    rows = by_rule(args.folders, args.source)
    for row in rows:
        print(f"{row['dataset']:5s} {row['per_class']:3d}/class ({row['runs']} runs)  {row['rule']:32s} ", end="")
        print(f"{row['ece']:.3f}  {row[f'share_at_most_{TARGET}']:.0%}  ({row['ece_by_seed']})")
    if args.out:
        out = results_file("label-review", args.out)
        record = {"command": invocation("bench.temperature_rules"), "machine": machine(), "table": pivoted(rows)}
        record["runs"] = rows
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
