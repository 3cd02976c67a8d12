"""Does LogME rank backbones like fine-tuning does? And what does selection cost?

    python -m bench.selection [--layers 3 1] [--metric logme] [--selection-layers all|last]

Candidates, all offline: the bundled all-MiniLM-L6-v2, copies with only its lowest
``--layers`` transformer layers, and a randomly initialised copy. On the demo data (the shipped
2,000-row SST-2 sample, 872-row test): score every candidate with the selection metric
(sample = the demo's default `backbone.selection_sample`), then fine-tune each with the demo
recipe and measure test accuracy. Prints both rankings, Kendall's tau between them, and
selection time as a share of the demo's training time (three candidates: the bundled model,
the first truncation and the random copy). Writes bench/results/selection/selection-METRIC-SAMPLE-LAYERS.json.
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
from scipy.stats import kendalltau

from bench.fixtures import random_copy, truncated_copy
from bench.paths import REPO, results_file
from finetune_core.config.loading import load_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.model.backbone import resolve_backbone
from finetune_core.selection.candidates import rank_backbones
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.stage_setup import StageInputs


def fine_tuned_accuracy(config, prepared, backbone: str, work: Path) -> tuple[float, float]:
    started = time.perf_counter()
    frozen_stage.train_frozen(StageInputs(config, prepared, backbone, work / "frozen"))
    unfrozen_stage.train_unfrozen(StageInputs(config, prepared, work / "frozen", work / "model"))
    seconds = time.perf_counter() - started
    return evaluate_model(config, prepared, work / "model")["accuracy"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 1])
    parser.add_argument("--metric", default="logme", choices=["logme", "probe"])
    parser.add_argument("--selection-layers", default="all", choices=["all", "last"], help="backbone.selection_layers")
    parser.add_argument("--sample", type=int, default=500, help="backbone.selection_sample")
    parser.add_argument(
        "--accuracy-from",
        type=Path,
        default=None,
        help="reuse the fine-tuned accuracies of an earlier results file (same candidates, seeded)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        full = resolve_backbone("bundled:all-MiniLM-L6-v2")
        candidates = {"all-MiniLM-L6-v2": full}
        for keep in args.layers:
            candidates[f"lowest {keep} layer(s)"] = str(truncated_copy(full, work / f"keep{keep}", keep))
        candidates["random init"] = str(random_copy(full, work / "random"))
        config = load_config(
            REPO / "examples" / "sst2.yaml",
            [
                f"backbone.candidates={json.dumps(list(candidates.values()))}",
                f"backbone.selection_metric={args.metric}",
                f"backbone.selection_sample={args.sample}",
                f"backbone.selection_layers={args.selection_layers}",
                "training.feature_cache=false",
            ],
        )
        prepared = prepare_splits(config, work / "data")
        names = {path: name for name, path in candidates.items()}

        selection = rank_backbones(config, prepared, work / "selection")
        three = [full, candidates[f"lowest {args.layers[0]} layer(s)"], candidates["random init"]]
        three_config = config.model_copy(deep=True)
        three_config.backbone.candidates = three
        three_seconds = rank_backbones(three_config, prepared, work / "selection3").seconds

        accuracy, train_seconds = {}, {}
        if args.accuracy_from is not None:
            earlier = json.loads(args.accuracy_from.read_text())
            accuracy = earlier["fine_tuned_accuracy"]
            train_seconds = {"all-MiniLM-L6-v2": earlier["demo_training_seconds"]}
        for name, path in candidates.items() if args.accuracy_from is None else []:
            accuracy[name], train_seconds[name] = fine_tuned_accuracy(
                config, prepared, path, work / name.replace(" ", "_")
            )
            print(f"{name}: fine-tuned test accuracy {accuracy[name]:.4f} ({train_seconds[name]:.0f} s)", flush=True)
    scores = {names[s.path]: s.score for s in selection.ranking}
    order = list(candidates)
    tau = kendalltau([scores[n] for n in order], [accuracy[n] for n in order]).statistic
    result = {
        "metric": args.metric,
        "sample_rows": config.backbone.selection_sample,
        "selection_layers": args.selection_layers,
        "selection_scores": scores,
        "fine_tuned_accuracy": accuracy,
        "ranking_by_score": sorted(order, key=lambda n: -scores[n]),
        "ranking_by_accuracy": sorted(order, key=lambda n: -accuracy[n]),
        "kendall_tau": tau,
        "selection_seconds_three_candidates": three_seconds,
        "demo_training_seconds": train_seconds["all-MiniLM-L6-v2"],
        "selection_share_of_training": three_seconds / train_seconds["all-MiniLM-L6-v2"],
    }
    print(json.dumps(result, indent=1))
    results_file("selection", f"selection-{args.metric}-{args.sample}-{args.selection_layers}.json").write_text(
        json.dumps(result, indent=2)
    )


if __name__ == "__main__":
    main()
