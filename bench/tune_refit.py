"""Our sweep's winner trained again on train + validation, paired with the sweep that chose it (issue 44).

    python -m bench.tune_refit FILE [FILE ...] [--reproduce] [--pick best|last-epoch] --out OUT

Each FILE is a `bench.tune` results file whose sweep trained its winner on train (`search.refit_on: train`).
For each of its seeds, the winner's parameters (from FILE: the sweep is not run again) are trained once more as
`search.refit_on: train+validation` trains them (`finetune_core.search.refit.winner_config`): on the same train
split **and the validation rows the trials were scored on**, its last epoch kept, then scored on test.

A refit sweep asks the same trials as the sweep in FILE (same split, seeds and sampler; only the trial count a
time budget allows can differ), so this is its winner without running the search again: what the refit itself
changes, seed by seed. It gives no temperature (the trial's is not in FILE): accuracy only, the ECE uncalibrated.
``--reproduce``: the winner on train alone again (FILE's own score, if training is deterministic). The epoch
the winning trial was scored on (its first best validation accuracy) is recorded beside it. ``--pick
last-epoch``: instead of FILE's winner, the finished trial with the best validation accuracy at its last epoch
(the epoch a refit keeps), only on seeds where that is another trial; a row's ``best_params`` are the parameters
refit either way. Writes OUT; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.machine import machine
from bench.paths import invocation
from bench.tune import data_files, our_raw, start_flow_api


def scored_epoch(run: dict) -> int:
    """The epoch the winning trial was scored on: its first best validation accuracy (the loop keeps the
    first of equal bests)."""
    ours = run["ours"]
    trial = next(t for t in ours["trial_list"] if t["state"] == "complete" and t["params"] == ours["best_params"])
    curve = trial["epochs"]
    return curve.index(max(curve)) + 1


def last_epoch_pick(run: dict) -> dict:
    """The parameters of the finished trial with the best validation accuracy at its last epoch (ties: the
    lower last-epoch validation loss): the trial a sweep scored by its last epoch would have chosen."""
    done = [t for t in run["ours"]["trial_list"] if t["state"] == "complete"]
    return max(done, key=lambda t: (t["epochs"][-1], -t["epoch_losses"][-1]))["params"]


def _winner(raw: dict, best_params: dict, refit_on: str) -> dict:
    from finetune_core.config.loading import validate_config
    from finetune_core.search.refit import winner_config
    from flows.finetune import finetune

    config = validate_config({**raw, "search": {**raw["search"], "refit_on": refit_on}})
    winner = winner_config(config, best_params)
    started = time.perf_counter()
    result = finetune(winner)
    return {
        "test_accuracy": result.metrics["accuracy"],
        "test_ece_uncalibrated": result.metrics.get("ece_uncalibrated", result.metrics.get("ece")),
        "epochs": winner.training.unfrozen.epochs,
        "wall_seconds": time.perf_counter() - started,
    }


def one_seed(source: dict, run: dict, reproduce: bool, pick: str, params: dict) -> dict:
    """``params`` (the trial ``pick`` chose) trained on train + validation, and with ``reproduce`` on train."""
    row = {"seed": run["seed"], "ours": run["ours"]["test_accuracy"], "hf": run.get("hf", {}).get("test_accuracy")}
    row.update(scored_epoch=scored_epoch(run), pick=pick, best_params=params)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = data_files(source["dataset"], source["rows"] or None, workdir)

        def raw(name: str) -> dict:
            return our_raw(source["dataset"], files, workdir / name, run["seed"], {}, source.get("ours_set") or [])

        row["refit"] = _winner(raw("refit"), params, "train+validation")
        if reproduce:
            row["train_again"] = _winner(raw("train"), params, "train")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--reproduce", action="store_true", help="the winner on train alone again too")
    parser.add_argument(
        "--pick",
        choices=("best", "last-epoch"),
        default="best",
        help="the trial refit: FILE's winner, or the best at its last epoch (a seed where both agree is skipped)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    start_flow_api()
    result = {"sources": [str(f) for f in args.files], "runs": []}
    result.update(machine=machine(), command=invocation("bench.tune_refit"))
    for path in args.files:
        source = json.loads(path.read_text())
        result.update(dataset=source["dataset"], rows=source["rows"])
        for run in source["runs"]:  # written after each seed
            params = run["ours"]["best_params"] if args.pick == "best" else last_epoch_pick(run)
            if args.pick == "last-epoch" and params == run["ours"]["best_params"]:
                continue
            row = one_seed(source, run, args.reproduce, args.pick, params)
            result["runs"].append({"source": str(path), **row})
            args.out.write_text(json.dumps(result, indent=2, default=str))
            print(json.dumps({k: v for k, v in row.items() if k != "best_params"}, default=str), flush=True)


if __name__ == "__main__":
    main()
