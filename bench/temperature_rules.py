"""Which rule should turn a few-shot run's out-of-fold logits into the temperature it serves? Replayed on
the logits `bench.fewshot_calibration --keep-logits` saved (issue 45).

    python -m bench.temperature_rules bench/results/label-review/logits/NAME/DATASET [--source cross_fit_matched]

Per saved run (rows per class, seed): the served head's test logits and one source's out-of-fold logits over the
train rows. Each rule picks a temperature from the out-of-fold logits alone; the test ECE it gives is scored:

- ``none``: T = 1;
- ``fitted``: the NLL-minimising T (``metrics.calibration.fit_temperature``);
- ``served``: fitted where the out-of-fold predictions beat the majority class, else 1 (the pipeline's rule,
  ``calibration_step.beats_majority``);
- ``prior sd``: the most probable T under a normal prior on log T with that standard deviation
  (``fit_temperature(prior_sd=…)``), with and without the majority test;
- ``test-fitted``: T fitted on the test logits themselves, what no rule can know (the floor a temperature reaches).

Prints mean test ECE per rule and size, and the share of runs at or under 0.05; writes nothing.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from finetune_core.metrics.calibration import expected_calibration_error, fit_temperature
from finetune_core.training.calibration_step import beats_majority

PRIORS = (0.25, 0.5, 1.0)
TARGET = 0.05


def rules(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Each rule's temperature from one run's out-of-fold ``logits`` and ``targets``."""
    beats = beats_majority(logits, targets)
    chosen = {"none": 1.0, "fitted": fit_temperature(logits, targets)}
    chosen["served"] = chosen["fitted"] if beats else 1.0
    for sd in PRIORS:
        chosen[f"prior sd {sd}"] = fit_temperature(logits, targets, prior_sd=sd)
        chosen[f"prior sd {sd}, majority test"] = chosen[f"prior sd {sd}"] if beats else 1.0
    return chosen


def replay(folder: Path, source: str) -> dict[int, dict[str, list[float]]]:
    """{rows per class: {rule: test ECE per run}} over the folder's ``PER_CLASS-SEED.npz`` files."""
    scores: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.glob("*.npz")):
        per_class = int(re.match(r"(\d+)-\d+", path.stem).group(1))
        saved = np.load(path)
        test_logits, test_targets = saved["test_logits"], saved["test_targets"]
        chosen = rules(saved[f"{source}.logits"], saved[f"{source}.targets"])
        chosen["test-fitted"] = fit_temperature(test_logits, test_targets)
        for rule, temperature in chosen.items():
            scores[per_class][rule].append(expected_calibration_error(test_logits, test_targets, temperature))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--source", default="cross_fit_matched", help="whose out-of-fold logits the rules read")
    args = parser.parse_args()
    for per_class, by_rule in sorted(replay(args.folder, args.source).items()):
        print(f"{per_class} rows per class ({len(by_rule['none'])} runs): mean test ECE, share <= {TARGET}")
        for rule, errors in by_rule.items():
            met = np.mean(np.asarray(errors) <= TARGET)
            shown = " ".join(f"{e:.3f}" for e in errors)
            print(f"  {rule:32s} {np.mean(errors):.3f}  {met:.0%}  ({shown})")


if __name__ == "__main__":
    main()
