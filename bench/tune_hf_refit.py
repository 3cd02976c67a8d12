"""HF's side given the rows our `search.refit_on: train+validation` gives our winner (issue 44).

    python -m bench.tune_hf_refit FILE [--reproduce] [--out FILE2]

FILE is a `bench.tune` results file whose sweep trained its winner on train + validation. For each seed, HF
Trainer's best parameters (from FILE: its search is not run again) are trained once more on the same train
split **and the validation rows its search scored on**, then scored on test: how much of ours − HF comes
from the winner's extra rows rather than from the search. ``--reproduce``: as a check that nothing else
changed, the same parameters train on train alone again too (``train_only_again``: the file's ``hf`` score,
if training is deterministic; it doubles the time). Writes FILE's record with ``hf_refit`` beside each
seed's ``hf`` (default: FILE itself); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.machine import machine
from bench.paths import invocation
from bench.tune import data_files, hf_final, hf_parts, raw_config
from finetune_core.environment import apply_defaults


def hf_refit(dataset: str, rows: int | None, seed: int, hyperparameters: dict, reproduce: bool) -> dict:
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = data_files(dataset, rows, workdir)
        parts = hf_parts(raw_config(dataset, files, workdir / "hf", seed, {}), workdir, seed)
        started = time.perf_counter()
        both = datasets.concatenate_datasets([parts.splits["train"], parts.splits["validation"]])
        accuracy = hf_final(parts, hyperparameters, both)
        result = {"test_accuracy": accuracy, "wall_seconds": time.perf_counter() - started, "train_rows": len(both)}
        if reproduce:  # the search's own final run, again
            result["train_only_again"] = hf_final(parts, hyperparameters, parts.splits["train"])
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--reproduce", action="store_true", help="HF's final training on train alone again too")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    apply_defaults(offline=True)  # the bundled backbone, no hub; no flow runs here, so no Prefect API
    result = json.loads(args.file.read_text())
    for run in result["runs"]:
        rows, chosen = result["rows"] or None, run["hf"]["best_params"]
        run["hf_refit"] = hf_refit(result["dataset"], rows, run["seed"], chosen, args.reproduce)
        print(run["seed"], run["hf"]["test_accuracy"], run["hf_refit"]["test_accuracy"], flush=True)
    result["hf_refit_machine"], result["hf_refit_command"] = machine(), invocation("bench.tune_hf_refit")
    (args.out or args.file).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
