"""Equal wall clock against Hugging Face Trainer on the full SST-2 training set (`python
bench/engine.py budget --minutes M [--training JSON] [--hf-from FILE] [--tag=-T]`): HF Trainer gets
``M`` minutes; ours gets the same minutes for both stages, the frozen stage's feature extraction
included, stage 2 capped at what is left; test accuracy of both on the 872-row test set."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.hf_baseline import hf_train
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.model.backbone import resolve_backbone
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.stage_setup import StageInputs


def budget(workdir: Path, engine, minutes: float, hf_from: Path | None = None, overrides: dict | None = None) -> dict:
    """Equal wall-clock training budget on the full training set: test accuracy. ``hf_from``: take
    the HF figure from an earlier result file (run back to back) instead of training HF again.
    ``overrides``: our training settings (e.g. unfrozen.freeze_layers); HF trains at the precision
    ours resolves to (bf16 where the CPU has it), so both sides compare at equal precision. ``engine``:
    bench/engine.py's module (its data, configuration and backbone)."""
    from finetune_core.training.device import runtime_for

    recorded = overrides or {}  # as given: the stage-2 section is popped from a copy below
    overrides = dict(recorded)
    unfrozen = {"epochs": 3, "max_minutes": minutes, **overrides.pop("unfrozen", {})}
    files = engine.sst2_files(workdir, None)
    config = engine.our_config(files, unfrozen=unfrozen, feature_cache=False, **overrides)
    bf16 = runtime_for(config.training).precision == "bf16"
    if hf_from is not None:
        hf = json.loads(hf_from.read_text())
        if hf.get("seed", 42) != config.training.seed:  # files before the seed was recorded ran seed 42
            raise SystemExit(f"{hf_from}: HF Trainer ran seed {hf.get('seed', 42)}, ours is {config.training.seed}")
        hf = {"accuracy": hf["hf_accuracy"], "samples_seen": hf["hf_samples_seen"]}
    else:
        hf = hf_train(
            files,
            engine.BACKBONE,
            epochs=3,
            padding="dynamic",
            group_by_length=True,
            max_seconds=minutes * 60,
            bf16=bf16,
            seed=config.training.seed,  # `--training '{"seed": N}'` seeds both sides
        )
    print(f"HF Trainer (dynamic + grouped, bf16 {bf16}), {minutes} min: accuracy {hf['accuracy']:.4f}", flush=True)
    # The frozen stage (feature extraction included) counts against the same budget.
    prepared = prepare_splits(config, workdir / "budget-data")
    started = time.perf_counter()
    frozen = frozen_stage.train_frozen(
        StageInputs(config, prepared, resolve_backbone(engine.BACKBONE), workdir / "budget-frozen")
    )
    frozen_seconds = time.perf_counter() - started
    config.training.unfrozen.max_minutes = max(minutes - frozen_seconds / 60, 0.1)
    unfrozen = unfrozen_stage.train_unfrozen(
        StageInputs(config, prepared, workdir / "budget-frozen", workdir / "budget-model")
    )
    ours = evaluate_model(config, prepared, workdir / "budget-model")["accuracy"]
    result = {
        "minutes": minutes,
        "hf_accuracy": hf["accuracy"],
        "ours_accuracy": ours,
        "points_gained": 100 * (ours - hf["accuracy"]),
        "hf_samples_seen": hf["samples_seen"],
        "ours_seconds": time.perf_counter() - started,
        "ours_frozen_seconds": frozen_seconds,  # features (all rows, or the head's sample) and the head
        "ours_head_rows": frozen.extra.get("head_rows", prepared.rows["train"]),
        "ours_stage2_train_seconds": unfrozen.train_seconds,
        "overrides": recorded,
        "seed": config.training.seed,
        "precision_both": "bf16" if bf16 else "fp32",
        "ours_stage2_samples_seen": unfrozen.samples_per_second * unfrozen.train_seconds,
        "ours_stage2_samples_per_second": unfrozen.samples_per_second,
        "ours_stage2_extra": unfrozen.extra,
    }
    print(json.dumps(result, indent=1))
    return result
