"""Hyperparameter search, ours against Hugging Face Trainer's, at an equal search budget (issue 44).

    python -m bench.tune [--dataset sst2|mrpc] [--rows 2000] [--seeds 0 1 2] [--minutes 20]
                         [--skip-unpruned | --pruning-only] [--skip-default] [--prune-on metric|loss]
                         [--set KEY=VALUE ...]

Per seed, on the same rows, backbone (the bundled all-MiniLM-L6-v2) and precision (fp32):

- ours: `flows.tune.tune` with ``search.max_minutes`` = the budget (the default space, TPE seeded, the
  median pruner), its winner trained once more as a run and scored on test; wall clock of the whole;
- HF: ``Trainer.hyperparameter_search(backend="optuna")`` with ``timeout`` = the budget on the same
  train/validation split, over the keys Trainer has (learning rate log 2e-5..3e-4, epochs 2..5, warmup
  0..0.2: layer decay, freeze_layers and dropout have no Trainer argument), TPE seeded; its best run
  trained once more and scored on test;
- the default recipe: one `finetune` run with no search (``--skip-default``: not run; one measured before);
- unpruned (unless ``--skip-unpruned``): the same sweep with ``pruner: none``: every point the pruned
  sweep asked, enqueued in its order and run to the end, to compare trial seconds at the result each
  reaches (``--pruning-only``: this pair alone, without HF's search and the default recipe).

``--set dotted.key=value`` (repeatable): a recipe option of ours, as a user would write it in the configuration
(e.g. ``augmentation.swap_pairs=true`` for paraphrases, or ``search.refit_on=train+validation`` with
``data.validation_fraction=0.2``), given to our sweep, its unpruned twin and the default
recipe, never to HF's search, which has no such option; the results file records it.

``--points-from FILE``: only the unpruned sweep, once per seed of FILE (a paired results file), over that seed's
pruned points again; each trial's per-epoch validation loss is read from its nested MLflow run
(``epoch_losses``), so `bench.tune_pruning` can replay the pruner on the loss as well as on accuracy.

Data: ../shared/data/{sst2,mrpc} (SST2_DIR, MRPC_DIR). Writes bench/results/hyperparameter-search/
tune-<dataset>.json (``--out`` elsewhere); asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from bench.hf_baseline import run_glue_arguments
from bench.machine import machine
from bench.paths import SHARED_DATA, invocation, results_file

EXPERIMENT = "hyperparameter-search"
PRUNED_STAGE = "unfrozen"  # the stage the pruner hears from under the default recipe (search.trial.pruned_stage)
BACKBONE = "bundled:all-MiniLM-L6-v2"
DATASETS = {
    "sst2": {
        "dir": Path(os.environ.get("SST2_DIR", SHARED_DATA / "sst2")),
        "files": ("train.tsv", "test.tsv"),
        "columns": {"text_column": "sentence"},
    },
    "mrpc": {
        "dir": Path(os.environ.get("MRPC_DIR", SHARED_DATA / "mrpc")),
        "files": ("train.jsonl", "test.jsonl"),
        "columns": {"text_column": "sentence1", "text_pair_column": "sentence2"},
    },
}


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False)


def data_files(dataset: str, rows: int | None, workdir: Path) -> dict[str, Path]:
    spec = DATASETS[dataset]
    train, test = (_read(spec["dir"] / name) for name in spec["files"])
    if rows and rows < len(train):
        train = train.sample(n=rows, random_state=0)
    files = {"train": workdir / "train.jsonl", "test": workdir / "test.jsonl"}
    train.to_json(files["train"], orient="records", lines=True)
    test.to_json(files["test"], orient="records", lines=True)
    return files


def raw_config(dataset: str, files: dict[str, Path], workdir: Path, seed: int, search: dict) -> dict:
    return {
        "data": {"train": str(files["train"]), "test": str(files["test"]), **DATASETS[dataset]["columns"]},
        "backbone": {"candidates": [BACKBONE]},
        "training": {"seed": seed, "precision": "fp32"},
        "mlflow": {"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "experiment": "bench-tune"},
        "output_dir": str(workdir / "runs"),
        "gates": {"beat_baseline": False},
        "serving": {"onnx": False},  # the search is compared, not the served form: HF's side exports nothing
        "search": {"seed": seed, **search},
    }


def our_raw(dataset: str, files: dict[str, Path], workdir: Path, seed: int, search: dict, sets) -> dict:
    """Our side's configuration: ``raw_config`` with the ``--set`` overrides (``sets``) HF's side never gets."""
    from finetune_core.config.loading import apply_overrides

    return apply_overrides(raw_config(dataset, files, workdir, seed, search), list(sets))


def ours(raw: dict) -> dict:
    from finetune_core.config.loading import validate_config
    from flows.tune import tune

    started = time.perf_counter()
    result = tune(validate_config(raw))
    return {
        "wall_seconds": time.perf_counter() - started,
        "test_accuracy": result.winner.metrics["accuracy"],
        "test_ece": result.winner.metrics.get("ece"),  # temperature applied, as served
        "test_ece_uncalibrated": result.winner.metrics.get("ece_uncalibrated"),
        "temperature": result.winner.calibration.get("temperature"),
        "best_validation": result.best_value,
        "best_params": result.best_params,
        "trials": result.trials,
        **_study_trials(raw, result.study),
    }


def _study_trials(raw: dict, study_name: str) -> dict:
    """The sweep's trial seconds, and each trial (parameters, state, per-epoch and final validation): a
    pruned trial's unpruned twin, where both sweeps asked the same point, shows what pruning gave up."""
    import optuna
    from mlflow import MlflowClient

    storage = raw["mlflow"]["tracking_uri"].replace("mlflow.db", "optuna.db")
    study = optuna.load_study(study_name=study_name, storage=storage)
    client = MlflowClient(tracking_uri=raw["mlflow"]["tracking_uri"])
    trials = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "reported": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],  # what the pruner heard
            "epochs": _epoch_series(client, t.user_attrs.get("mlflow_run_id"), "val_accuracy"),
            "epoch_losses": _epoch_series(client, t.user_attrs.get("mlflow_run_id"), "val_loss"),
            "seconds": t.duration.total_seconds() if t.duration else 0.0,
            "params": t.params,
        }
        for t in study.get_trials(deepcopy=False)  # one read of the storage
    ]
    return {"trial_seconds": sum(t["seconds"] for t in trials), "trial_list": trials}


def _epoch_series(client, run_id: str | None, metric: str) -> list[float]:
    """The trial's per-epoch validation ``metric`` of the pruned stage, from its nested MLflow run: accuracy
    and loss whichever the pruner heard, so `bench.tune_pruning` can replay it on either."""
    if run_id is None:
        return []
    history = client.get_metric_history(run_id, f"{PRUNED_STAGE}/{metric}")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def default_recipe(raw: dict) -> dict:
    from finetune_core.config.loading import validate_config
    from flows.finetune import finetune

    started = time.perf_counter()
    result = finetune(validate_config({**raw, "search": {}}))
    return {"wall_seconds": time.perf_counter() - started, "test_accuracy": result.metrics["accuracy"]}


def hf_search(raw: dict, workdir: Path, minutes: float, seed: int) -> dict:
    """Trainer's own search on our train/validation split (prepared by the pipeline's own code)."""
    import optuna
    from transformers import Trainer

    parts = hf_parts(raw, workdir, seed)

    def space(trial):
        return {
            "learning_rate": trial.suggest_float("learning_rate", 2e-5, 3e-4, log=True),
            "num_train_epochs": trial.suggest_int("num_train_epochs", 2, 5),
            "warmup_steps": trial.suggest_float("warmup_steps", 0.0, 0.2),  # below 1: a share of the steps
        }

    trainer = Trainer(
        model_init=parts.model_init,
        args=dataclasses.replace(parts.glue, eval_strategy="epoch"),
        train_dataset=parts.splits["train"],
        eval_dataset=parts.splits["validation"],
        **parts.common,
    )
    started = time.perf_counter()
    best = trainer.hyperparameter_search(
        hp_space=space,
        backend="optuna",
        direction="maximize",
        n_trials=1000,
        timeout=minutes * 60,
        compute_objective=lambda metrics: metrics["eval_accuracy"],
        sampler=optuna.samplers.TPESampler(seed=seed),
    )
    searched = time.perf_counter() - started
    accuracy = hf_final(parts, best.hyperparameters, parts.splits["train"])
    return {
        "wall_seconds": time.perf_counter() - started,
        "search_seconds": searched,
        "test_accuracy": accuracy,
        "best_validation": best.objective,
        "best_params": best.hyperparameters,
    }


class HFParts(NamedTuple):
    """Trainer's side on our train/validation split: what every Trainer of a seed is built from."""

    splits: dict  # tokenised train, validation and test
    model_init: Callable  # the checkpoint with a new two-class head
    glue: object  # run_glue's TrainingArguments
    common: dict  # the collator and metric every Trainer takes


def hf_parts(raw: dict, workdir: Path, seed: int) -> HFParts:
    """Trainer's side on our train/validation split (prepared by the pipeline's own code)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from finetune_core.config.loading import validate_config
    from finetune_core.data.prepare import prepare_splits
    from finetune_core.model.backbone import resolve_backbone

    config = validate_config(raw)
    prepared = prepare_splits(config, workdir / "hf-data")
    backbone = resolve_backbone(BACKBONE)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    splits = {
        s: _hf_dataset(prepared, s, tokenizer, config.training.max_length) for s in ("train", "validation", "test")
    }
    model_init = lambda trial=None: AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)  # noqa: E731
    glue = run_glue_arguments(str(workdir / "hf-out"), 3, config.training.batch_size, False, seed, True)
    common = dict(data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=_accuracy)
    return HFParts(splits, model_init, glue, common)


def hf_final(parts: HFParts, hyperparameters: dict, train) -> float:
    """HF's chosen parameters trained once more on ``train``; its test accuracy."""
    from transformers import Trainer

    args = dataclasses.replace(parts.glue, **hyperparameters)
    final = Trainer(model=parts.model_init(), args=args, train_dataset=train, **parts.common)
    final.train()
    predictions = final.predict(parts.splits["test"])
    return float((np.argmax(predictions.predictions, axis=-1) == predictions.label_ids).mean())


def _hf_dataset(prepared, split: str, tokenizer, max_length: int):
    import datasets

    from finetune_core.data.columns import LABEL, TEXT, TEXT_PAIR

    frame = prepared.frame(split)
    pair = frame[TEXT_PAIR].tolist() if TEXT_PAIR in frame else None
    encoded = tokenizer(frame[TEXT].tolist(), pair, truncation=True, max_length=max_length)
    labels = frame[LABEL].tolist()
    if prepared.labels and not isinstance(labels[0], (int, np.integer)):
        labels = [prepared.labels.index(str(v)) for v in labels]
    return datasets.Dataset.from_dict({**encoded, "labels": labels})


def _accuracy(prediction) -> dict:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def paired_unpruned(raw: dict, pruned_trials: list[dict]) -> dict:
    """The same sweep unpruned: every point the pruned sweep asked, in its order, enqueued in a study
    with ``pruner: none`` and run to the end. TPE's later points depend on what pruning told it, so a
    sweep left to its own sampler would compare different points; this compares the same ones."""
    from finetune_core.config.loading import validate_config
    from finetune_core.config.tracking import with_resolved_tracking
    from finetune_core.run_layout import inputs_digest
    from finetune_core.search.space import resolve_space, study_name
    from finetune_core.search.study import default_storage, open_study

    Path(raw["output_dir"]).parent.mkdir(parents=True, exist_ok=True)  # where the SQLite stores go
    config = with_resolved_tracking(validate_config(raw))
    data = config.data
    name = study_name(config, resolve_space(config), inputs_digest([data.train, data.validation, data.test]))
    study = open_study(config, name=name, storage_url=default_storage(config), task=config.task)
    asked = [t["params"] for t in sorted(pruned_trials, key=lambda t: t["number"])]
    for params in asked:
        study.enqueue_trial(params)
    result = ours(raw)
    result["paired"] = [t["params"] for t in sorted(result["trial_list"], key=lambda t: t["number"])] == asked
    return result


def one_seed(
    dataset: str,
    rows: int | None,
    minutes: float,
    seed: int,
    *,
    unpruned: bool,
    peers: bool,
    prune_on: str,
    sets: tuple[str, ...] = (),
    default: bool = True,
) -> dict:
    """Our pruned sweep; unless ``peers`` is off, HF's search and (unless ``default`` is off) the default
    recipe; unless ``unpruned`` is off, the same sweep unpruned (``paired_unpruned``). ``sets``: overrides
    of our configuration only."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = data_files(dataset, rows, workdir)

        def our_config(name: str, search: dict) -> dict:
            return our_raw(dataset, files, workdir / name, seed, search, sets)

        budget = {"n_trials": 1000, "max_minutes": minutes, "pruner": "median", "prune_on": prune_on}
        row = {"seed": seed, "ours": ours(our_config("ours", budget))}
        if peers:
            row["hf"] = hf_search(raw_config(dataset, files, workdir / "hf", seed, {}), workdir, minutes, seed)
            if default:
                row["default"] = default_recipe(our_config("default", {}))
        if unpruned:
            asked = row["ours"]["trial_list"]
            same = {"n_trials": len(asked), "pruner": "none"}
            row["unpruned"] = paired_unpruned(our_config("unpruned", same), asked)
    return row


def points_again(source: Path, seeds: list[int]) -> Iterator[dict]:
    """The unpruned half of a paired results file run again over the same points (per seed, its pruned
    sweep's points, enqueued in order): the per-epoch validation losses the older file lacks, beside a
    second measurement of the accuracy curves. The pruned sweep's record is copied from ``source``."""
    previous = json.loads(source.read_text())
    result = {key: previous[key] for key in ("dataset", "rows", "minutes")}
    result["runs"], result["points_from"] = [], str(source)
    for run in previous["runs"]:
        if run["seed"] not in seeds:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            files = data_files(previous["dataset"], previous["rows"] or None, workdir)
            asked = run["ours"]["trial_list"]
            same = {"n_trials": len(asked), "pruner": "none"}
            raw = raw_config(previous["dataset"], files, workdir / "unpruned", run["seed"], same)
            result["runs"].append({"seed": run["seed"], "ours": run["ours"], "unpruned": paired_unpruned(raw, asked)})
        yield result


def start_flow_api() -> None:
    """Offline defaults and a Prefect API for the flows: the temporary server `finetune run` starts, with a
    patient timeout. Every bench that runs the flows calls it first."""
    from finetune_core.environment import apply_defaults

    apply_defaults(offline=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    from flows.cli.prefect_api import start_temporary_api, wait_for_api

    wait_for_api(start_temporary_api())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    parser.add_argument("--rows", type=int, default=2000, help="train rows (seeded sample); 0: all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=20.0, help="search budget of each side")
    parser.add_argument("--skip-unpruned", action="store_true", help="no unpruned sweep (saves its time)")
    parser.add_argument("--pruning-only", action="store_true", help="no HF search, no default recipe")
    parser.add_argument("--prune-on", choices=["metric", "loss"], default="loss", help="search.prune_on of ours")
    parser.add_argument("--skip-default", action="store_true", help="no default recipe (one measured before)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE for our side only")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: bench/results/...)")
    parser.add_argument("--points-from", type=Path, default=None, help="only the unpruned sweep, on this file's points")
    args = parser.parse_args()
    start_flow_api()
    out = args.out or results_file(EXPERIMENT, f"tune-{args.dataset}.json")
    if args.points_from:
        for result in points_again(args.points_from, args.seeds):  # written after each seed
            result.update(machine=machine(), command=invocation("bench.tune"))
            out.write_text(json.dumps(result, indent=2, default=str))
        return
    result = {
        "dataset": args.dataset,
        "rows": args.rows,
        "minutes": args.minutes,
        "prune_on": args.prune_on,
        "ours_set": args.sets,
        "runs": [],
    }
    result.update(machine=machine(), command=invocation("bench.tune"))
    for seed in args.seeds:  # written after each seed: a long run keeps what it measured
        unpruned, peers = not args.skip_unpruned, not args.pruning_only
        row = one_seed(
            args.dataset,
            args.rows or None,
            args.minutes,
            seed,
            unpruned=unpruned,
            peers=peers,
            prune_on=args.prune_on,
            sets=tuple(args.sets),
            default=not args.skip_default,
        )
        result["runs"].append(row)
        out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2, default=str))


if __name__ == "__main__":
    main()
