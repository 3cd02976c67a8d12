"""Which training recipe a run uses, decided from its data: ``strategy: auto`` picks linear-probe,
contrastive or lp-ft from the rows per class and the time budget, and a validation split too small
to choose an epoch or a temperature on switches best-epoch restore and calibration off; under a
time budget the frozen stage's head fits on a sample of train (``head_rows``).

The decisions are pure functions (``choose_strategy``, ``validation_plan``); ``resolve`` applies
them to a configuration and the prepared data (folding a held-out validation split back into train
for `auto`'s contrastive recipe) and says why, for the run's params, log and version description.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.folding import fold_validation_into_train, held_out_rows
from finetune_core.data.labels import read_labels
from finetune_core.data.prepare import MIN_VALIDATION_ROWS_PER_CLASS, PreparedData
from finetune_core.data.sampling import seeded_sample

# Up to this many training rows per class (mean over classes, after any validation split) `auto`
# tunes the encoder contrastively on pairs before the head (SetFit's regime); above 64 it was not
# measured, so `auto` keeps lp-ft there. docs/benchmarks/fewshot-sst2.md.
CONTRASTIVE_UP_TO_ROWS_PER_CLASS = 64
# Whether `auto`, having chosen contrastive, runs the unfrozen stage after the head: no, it did not
# help and costs time (docs/benchmarks/fewshot-sst2.md).
UNFROZEN_AFTER_CONTRASTIVE = False
# Whether `auto`, having chosen contrastive, trains on the rows a validation split held out of train
# (no `data.validation` file): yes. There the split decides only a temperature, and the held-out rows
# are ones SetFit trains on (docs/benchmarks/fewshot-sst2.md).
FOLD_VALIDATION_FOR_CONTRASTIVE = True
# An unfrozen-stage budget shorter than this leaves too few steps to move the encoder: probe only.
PROBE_BELOW_MINUTES = 1.0


@dataclass(frozen=True)
class Recipe:
    strategy: str  # what the stages run (never "auto")
    reason: str  # one line: why, for the run param, the log and the version description
    validation: str  # "used" or "skipped: N rows per class"


def choose_strategy(rows_per_class: float, task: str, max_minutes: float | None) -> tuple[str, str]:
    """(strategy, reason) for ``strategy: auto``; ``rows_per_class``: training rows over classes
    (regression: all rows)."""
    if max_minutes is not None and max_minutes < PROBE_BELOW_MINUTES:
        return "linear-probe", f"unfrozen.max_minutes {max_minutes:g} < {PROBE_BELOW_MINUTES:g}: head only"
    if task != "classification":
        return "lp-ft", f"{task}: contrastive pairs need one class per row"
    if rows_per_class <= CONTRASTIVE_UP_TO_ROWS_PER_CLASS:
        then = "the head, then the unfrozen stage" if UNFROZEN_AFTER_CONTRASTIVE else "the head only"
        return "contrastive", (
            f"{rows_per_class:.0f} training rows per class <= {CONTRASTIVE_UP_TO_ROWS_PER_CLASS}: "
            f"contrastive encoder tuning on pairs, then {then} (as measured in bench/fewshot.py)"
        )
    return "lp-ft", (
        f"{rows_per_class:.0f} training rows per class: lp-ft (contrastive up to "
        f"{CONTRASTIVE_UP_TO_ROWS_PER_CLASS} per class, as measured in bench/fewshot.py)"
    )


def validation_plan(validation_rows_per_class: dict[str, int], in_train: bool = False) -> str:
    """ "used", or "skipped: N rows per class" when the smallest class has too few validation rows
    (``in_train``: those rows, held out of train, were put back: prepare_splits)."""
    if not validation_rows_per_class:  # regression: no classes; rows are checked by count
        return "used"
    fewest = min(validation_rows_per_class.values())
    if fewest >= MIN_VALIDATION_ROWS_PER_CLASS:
        return "used"
    return f"skipped: {fewest} rows per class" + ("; they train too" if in_train else "")


def class_counts(prepared: PreparedData, split: str) -> dict[str, int]:
    """Rows per class name in a prepared split (empty for regression)."""
    if prepared.task != "classification":
        return {}
    counts = Counter(int(label) for label in read_labels(Path(prepared.paths[split])))
    return {name: counts.get(i, 0) for i, name in enumerate(prepared.labels or [])}


def resolve(config: FinetuneConfig, prepared: PreparedData) -> tuple[FinetuneConfig, Recipe, PreparedData]:
    """The configuration the stages run (strategy resolved; keep_best and calibrate off on a tiny
    validation split), the recipe saying why, and the data they train on (``prepared``, or with
    its held-out validation rows folded into train)."""
    training = config.training
    train = class_counts(prepared, "train")
    rows_per_class = prepared.rows["train"] / max(len(train), 1)
    if training.strategy == "auto":
        strategy, reason = choose_strategy(rows_per_class, config.task, training.unfrozen.max_minutes)
    else:
        strategy, reason = training.strategy, "set in the configuration"
    validation = validation_plan(class_counts(prepared, "validation"), prepared.validation_in_train)
    if config.data.train_on_validation and prepared.validation_in_train:
        validation = f"skipped: data.train_on_validation: all {prepared.rows['train']} rows train"
    auto_contrastive = training.strategy == "auto" and strategy == "contrastive"
    fold = (
        FOLD_VALIDATION_FOR_CONTRASTIVE
        and auto_contrastive
        and config.data.validation is None  # `auto` never merges a validation file you give
        and held_out_rows(prepared)
    )
    if fold:
        prepared = fold_validation_into_train(prepared)
        validation = f"skipped: contrastive on few rows trains on all {prepared.rows['train']}; they train too"
    update = {"strategy": strategy}
    if auto_contrastive and not UNFROZEN_AFTER_CONTRASTIVE:
        update["unfrozen"] = training.unfrozen.model_copy(update={"epochs": 0})
    if validation != "used":
        update.update(keep_best=False, calibrate=False, early_stopping_patience=None)
    resolved = config.model_copy(update={"training": training.model_copy(update=update)})
    return resolved, Recipe(strategy=strategy, reason=reason, validation=validation), prepared


# The head's rows when stage 2 follows under a time budget and training.frozen.max_rows is unset:
# there the head only starts stage 2, and extracting every row's features eats the budget;
# docs/benchmarks/equal-wall-clock.md.
HEAD_ROWS_UNDER_BUDGET = 4096


def head_rows(training, prepared: PreparedData, targets: np.ndarray, stage2_freeze: int | None) -> np.ndarray | None:
    """Positions of the train rows whose features fit the frozen stage's head, or None for every
    row. A subset only when stage 2 follows (``stage2_freeze`` is its frozen block count, None when
    it does not run). With blocks frozen the other rows still fill the layer cache, by a pass that
    stops after those blocks."""
    if stage2_freeze is None:
        return None
    cap = training.frozen.max_rows
    if cap is None and training.unfrozen.max_minutes:
        cap = HEAD_ROWS_UNDER_BUDGET
    if cap is None or cap >= len(targets):
        return None
    classes = targets.astype(np.int64) if prepared.task == "classification" else None
    return seeded_sample(classes, len(targets), cap, training.seed)
