"""The label review of a run's train split: its frozen features (the cache the frozen stage
filled, or the contrastive encoder's), out-of-fold predictions, the flagged rows written as
``suspect_labels.csv`` and a Markdown table, and the out-of-fold logits kept for few-shot
calibration. Nothing here knows about Prefect or MLflow; docs/concepts/label-review.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.columns import TEXTS
from finetune_core.data.copies import original_rows, train_copies
from finetune_core.data.fingerprint import files_fingerprint
from finetune_core.data.prepare import PreparedData
from finetune_core.durable import write_atomic
from finetune_core.evaluation.label_review import (
    FOLDS,
    LabelReview,
    out_of_fold_outputs,
    review_outputs,
    usable_folds,
)

SUSPECTS_FILE = "suspect_labels.csv"
TRAINING_SUSPECTS_FILE = "suspect_labels_training.csv"  # the second reading: stage 2's margins
DROPPED_FILE = "dropped_rows.csv"
OUT_OF_FOLD_FILE = "out_of_fold.npz"  # logits and targets: the few-shot temperature's data
TABLE_ROWS = 10  # rows in the version description's table; the CSV holds them all


@dataclass
class ReviewRun:
    review: LabelReview | None  # None: not possible (reason in `skipped`)
    folds: int
    skipped: str = ""


def train_features(config: FinetuneConfig, prepared: PreparedData, encoder: str):
    """(features, targets, sample) of the train rows the frozen stage's head read (``sample``: their
    positions when it fitted on a sample under a time budget, else None): the same cache key, so
    a finished frozen stage's features are read back, not extracted again."""
    from finetune_core.model.backbone import load_for_task, load_tokenizer
    from finetune_core.model.batching import take_encoded
    from finetune_core.model.features import DEFAULT_CACHE, FeatureSettings, cached_features
    from finetune_core.model.heads import resolve_pooling
    from finetune_core.training.device import eval_batches, runtime_for
    from finetune_core.training.encoded_splits import spec_for, split_tokens
    from finetune_core.training.recipe import head_rows

    training, trust = config.training, config.backbone.trust_remote_code
    runtime = runtime_for(training, encoder, trust)
    infer = runtime.for_inference()
    tokenizer = load_tokenizer(encoder, trust)
    model = load_for_task(encoder, prepared.task, prepared.labels, trust).to(runtime.device)
    pooling = resolve_pooling(config.backbone.pooling, encoder, pairs=prepared.pairs)
    spec = spec_for(model, pooling)
    if spec is None:
        return None, None, None
    encoded, targets = split_tokens(prepared, "train", tokenizer, training.max_length)
    if (sample := head_rows(training, prepared, targets, _stage2_follows(training))) is not None:
        encoded, targets = take_encoded(encoded, sample), targets[sample]  # the rows the head's features cover
    features, _ = cached_features(
        model,
        spec,
        encoded,
        encoder,
        FeatureSettings(
            max_length=training.max_length,
            batch_size=eval_batches(training, runtime),
            device=runtime.device,
            autocast=infer.autocast,
            precision=infer.precision,
            pooling=pooling,
            cache_dir=(training.cache_dir or DEFAULT_CACHE) if training.feature_cache else None,
        ),
        task="label review features",
    )
    return features.float().numpy(), targets, sample


def _stage2_follows(training) -> int | None:
    """``head_rows``' argument: 0 when an unfrozen stage follows the head, None when none does."""
    return None if training.strategy == "linear-probe" or training.unfrozen.epochs == 0 else 0


def review_train_split(config: FinetuneConfig, prepared: PreparedData, encoder: str, out_dir: Path) -> ReviewRun:
    """Review the train split's labels; the out-of-fold logits go to ``out_dir`` (classification). A row
    and its augmented copies share a fold; only the originals are reviewed (finetune_core.data.copies)."""
    features, targets, sample = train_features(config, prepared, encoder)
    if features is None:
        return ReviewRun(None, 0, "this backbone family has no cached frozen features")
    copies = train_copies(prepared.paths["train"])
    copies = copies and copies.take(sample)
    own = original_rows(copies, len(targets))
    targets = np.asarray(targets)
    folds = usable_folds(targets[own], prepared.task, FOLDS)
    if folds == 0:
        return ReviewRun(None, 0, "too few rows in some class for two folds")
    outputs = len(prepared.labels) if prepared.task != "regression" else 1
    logits = out_of_fold_outputs(
        features,
        targets,
        prepared.task,
        outputs=outputs,
        folds=folds,
        regularization=config.training.frozen.regularization,
        seed=config.training.seed,
        groups=copies.groups if copies else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if prepared.task == "classification":
        np.savez(out_dir / OUT_OF_FOLD_FILE, logits=logits[own], targets=targets[own])
    positions = np.flatnonzero(own) if sample is None else sample[own]  # back to positions in the train split
    return ReviewRun(review_outputs(logits[own], targets[own], prepared.task).of_rows(positions), folds)


def _label_names(value, prepared: PreparedData) -> str:
    if prepared.task == "regression":  # standardised for training: back to the data's scale
        return f"{value * prepared.target_std + prepared.target_mean:.4g}"
    names = prepared.labels or []
    return "|".join(names[i] for i in value) if isinstance(value, list) else names[value]


def suspects_frame(review: LabelReview, prepared: PreparedData) -> pd.DataFrame:
    """One row per flagged train row, most suspect first: row (position in the prepared train
    split), text(s), given label, suggested label, score."""
    train = pd.read_parquet(prepared.paths["train"])
    frame = pd.DataFrame({"row": review.rows} | {c: train[c].to_numpy()[review.rows] for c in prepared.text_columns})
    frame["given_label"] = [_label_names(v, prepared) for v in review.given]
    frame["suggested_label"] = [_label_names(v, prepared) for v in review.suggested]
    frame["score"] = np.round(review.score, 4)
    return frame


def write_suspects(review: LabelReview, prepared: PreparedData, out_dir: Path, name: str = SUSPECTS_FILE) -> Path:
    path = out_dir / name
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, suspects_frame(review, prepared).to_csv(index=False))
    return path


def suspects_table(frame: pd.DataFrame, rows: int = TABLE_ROWS) -> str:
    """The most suspect rows as a Markdown table (texts shortened, pipes escaped)."""
    shown = frame.head(rows)
    columns = [c for c in ("row", *TEXTS, "given_label", "suggested_label", "score") if c in frame]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for _, record in shown.iterrows():
        cells = [_cell(record[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def without_rows(prepared: PreparedData, rows: np.ndarray, out_dir: Path) -> PreparedData:
    """``prepared`` with train positions ``rows`` and their augmented copies removed (a new file; the old
    one is kept) and the removed rows recorded in ``out_dir``/dropped_rows.csv."""
    train = pd.read_parquet(prepared.paths["train"])
    copies = train_copies(prepared.paths["train"])
    keep = np.ones(len(train), dtype=bool)
    keep[rows if copies is None else copies.with_copies(rows)] = False
    path = Path(prepared.paths["train"]).with_name("train_without_suspects.parquet")
    train[keep].reset_index(drop=True).to_parquet(path, index=False)
    dropped = train[~keep].assign(row=np.flatnonzero(~keep))
    write_atomic(out_dir / DROPPED_FILE, dropped.to_csv(index=False))
    paths = {**prepared.paths, "train": str(path)}
    return prepared.model_copy(
        update={
            "paths": paths,
            "rows": {**prepared.rows, "train": int(keep.sum())},
            "fingerprint": files_fingerprint(paths),
        }
    )


def level_message(review: LabelReview, limit: float, file: str) -> tuple[bool, str]:
    """(above ``limit``, the one line that says how many train labels look wrong and where)."""
    message = f"{len(review.rows)} of {review.total} train labels ({review.fraction:.1%}) look wrong to {review.method}"
    above = review.fraction > limit
    message += f": see {file}" + (f"; above validation.max_suspect_label_fraction {limit:g}" if above else "")
    return above, message


def review_data(config: FinetuneConfig, out_dir: Path) -> tuple[PreparedData, ReviewRun, str]:
    """For a dataset still being labelled (`finetune review-labels`): prepare the splits, review the
    train split on the first backbone candidate's frozen features, write the CSV. Returns the
    prepared data, the review and the backbone it used."""
    from finetune_core.data.prepare import prepare_splits
    from finetune_core.model.backbone import resolve_backbone

    prepared = prepare_splits(config, out_dir / "data")
    backbone = config.backbone.candidates[0]
    run = review_train_split(config, prepared, resolve_backbone(backbone), out_dir / "review")
    (out_dir / "review" / OUT_OF_FOLD_FILE).unlink(missing_ok=True)  # no model to calibrate here
    if run.review is not None:
        write_suspects(run.review, prepared, out_dir / "review")
    return prepared, run, backbone


def new_rows_only(suspects: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """The suspects whose text (and pair) is not in ``previous`` (the champion's train rows, as
    columns ``text`` and optionally ``text_pair``): what a retrain's snapshot added. ``previous``
    None: every suspect is new."""
    if previous is None:
        return suspects
    keys = [c for c in TEXTS if c in suspects and c in previous]
    seen = set(map(tuple, previous[keys].astype(str).to_numpy()))
    fresh = [tuple(row) not in seen for row in suspects[keys].astype(str).to_numpy()]
    return suspects[np.asarray(fresh, dtype=bool)]
