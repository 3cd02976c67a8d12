"""Swapped sentence pairs (``augmentation.swap_pairs``): does adding every training pair again with its
texts swapped raise the default recipe's test accuracy on MRPC paraphrases, a symmetric relation?

    python -m bench.pair_swap [--rows 2000] [--seeds 0 1 2 3] [--out FILE]

The rows, configuration and runner of ``bench.tune``'s default recipe (``flows.finetune.finetune`` on the
bundled all-MiniLM-L6-v2, fp32, 2,000 seeded train rows, the full test split); per seed one run as given and one
with ``augmentation.swap_pairs: true``, back to back. Writes bench/results/sentence-pairs/pair-swap.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.machine import machine
from bench.paths import invocation, results_file
from bench.tune import data_files, default_recipe, raw_config, start_flow_api


def one_seed(rows: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = data_files("mrpc", rows, workdir)
        given = default_recipe(raw_config("mrpc", files, workdir / "given", seed, {}))
        raw = raw_config("mrpc", files, workdir / "swapped", seed, {})
        swapped = default_recipe({**raw, "augmentation": {"swap_pairs": True}})
    return {"seed": seed, "as_given": given, "swap_pairs": swapped}


def table_of(runs: list[dict]) -> list[dict]:
    rows = [
        {
            "seed": str(run["seed"]),
            "accuracy.as_given": run["as_given"]["test_accuracy"],
            "accuracy.swap_pairs": run["swap_pairs"]["test_accuracy"],
            "gain_points": 100 * (run["swap_pairs"]["test_accuracy"] - run["as_given"]["test_accuracy"]),
        }
        for run in runs
    ]
    mean = {key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key != "seed"}
    return rows + [{"seed": "mean", **mean}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", default="pair-swap.json")
    args = parser.parse_args()
    start_flow_api()
    runs, out = [], results_file("sentence-pairs", args.out)
    for seed in args.seeds:  # written after each seed
        runs.append(one_seed(args.rows, seed))
        record = {"command": invocation("bench.pair_swap"), "machine": machine(), "rows": args.rows}
        out.write_text(json.dumps({**record, "table": table_of(runs), "runs": runs}, indent=2) + "\n")
        print(json.dumps(table_of(runs)[-1]), flush=True)


if __name__ == "__main__":
    main()
