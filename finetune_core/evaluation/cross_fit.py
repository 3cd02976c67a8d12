"""Out-of-fold logits of the contrastive recipe that no encoder saw: per fold, an encoder tuned on
the other folds' rows only, the head fitted on its features of those rows, the fold's logits from
both. The tuned encoder of a run saw every train row, so a head over its features predicts a
held-out fold almost perfectly: a temperature fitted on that sharpens a head that is far less right
on new rows. docs/concepts/label-review.md, docs/benchmarks/label-review.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.copies import original_rows, train_copies
from finetune_core.data.fingerprint import files_fingerprint
from finetune_core.data.labels import read_labels
from finetune_core.data.prepare import PreparedData
from finetune_core.evaluation.label_review import fit_linear_head, fold_assignment, review_outputs, usable_folds
from finetune_core.evaluation.suspect_labels import OUT_OF_FOLD_FILE, ReviewRun, train_features
from finetune_core.training.stage_setup import StageInputs

CROSS_FIT_FOLDS = 2  # each fold costs a contrastive stage on (K-1)/K of the rows; two: half its cost more


def train_subset(prepared: PreparedData, keep: np.ndarray, path: Path) -> PreparedData:
    """``prepared`` whose train split is the rows ``keep`` marks (a new file at ``path``)."""
    import pyarrow.parquet as pq

    table = pq.read_table(prepared.paths["train"]).filter(keep)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    paths = {**prepared.paths, "train": str(path)}
    rows = {**prepared.rows, "train": table.num_rows}
    return prepared.model_copy(update={"paths": paths, "rows": rows, "fingerprint": files_fingerprint(paths)})


def cross_fitted_logits(
    config: FinetuneConfig,
    prepared: PreparedData,
    backbone: str,
    work_dir: Path,
    folds: int = CROSS_FIT_FOLDS,
    regularization: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) of every train row (classification), each from an encoder tuned without
    its fold and a head fitted on the other folds; ``backbone``: the encoder before tuning. The
    fold encoders are deleted from ``work_dir`` afterwards. ``regularization``: each fold head's C;
    by default the run's, scaled up by the rows the served head has over the fold head's, so that
    its penalty weighs against its loss as the served head's does: on fewer rows the same C shrinks
    the logits, and a temperature fitted on them over-sharpens the served head
    (docs/benchmarks/label-review.md)."""
    import torch

    from finetune_core.training.contrastive import train_contrastive
    from finetune_core.training.losses import targets_tensor

    targets = np.asarray(read_labels(prepared.paths["train"]), dtype=np.int64)
    copies = train_copies(prepared.paths["train"])  # a row and its augmented copies: one fold
    assignment = fold_assignment(targets, "classification", folds, config.training.seed, copies and copies.groups)
    # features of a throwaway encoder: not worth a place in the user's feature cache
    quiet = config.model_copy(update={"training": config.training.model_copy(update={"feature_cache": False})})
    logits = np.zeros((len(targets), len(prepared.labels)), dtype=np.float64)
    try:
        for fold in range(folds):
            held = assignment == fold
            part = train_subset(prepared, ~held, work_dir / f"fold-{fold}" / "train.parquet")
            encoder = work_dir / f"fold-{fold}" / "encoder"
            train_contrastive(StageInputs(quiet, part, backbone, encoder))
            features, _, sample = train_features(quiet, prepared, str(encoder))
            if sample is not None:
                raise ValueError("cross-fitting reads every train row: no training.frozen.max_rows sample")
            x = torch.as_tensor(features, dtype=torch.float64)
            y = targets_tensor(targets[~held], "classification")
            c = regularization
            if c is None:  # the run's C per row of the served head: scaled by its rows over the fold head's
                c = config.training.frozen.regularization * len(targets) / int((~held).sum())
            head = fit_linear_head(x[torch.from_numpy(~held)], y, "classification", logits.shape[1], c)
            with torch.no_grad():
                logits[held] = head(x[torch.from_numpy(held)]).numpy()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return logits, targets


def review_cross_fitted(config: FinetuneConfig, prepared: PreparedData, backbone: str, out_dir: Path) -> ReviewRun:
    """The label review of a contrastive run on cross-fitted logits (classification), which also
    go to ``out_dir`` for the temperature: the tuned encoder's own features hide a wrong label its
    pairs trained on, as they hide its errors from the temperature. Augmented copies train the folds;
    only the originals are reviewed and kept for the temperature."""
    copies = train_copies(prepared.paths["train"])
    targets = np.asarray(read_labels(prepared.paths["train"]))
    own = original_rows(copies, len(targets))
    folds = usable_folds(targets[own], "classification", CROSS_FIT_FOLDS)
    if folds == 0:
        return ReviewRun(None, 0, "too few rows in some class for two folds")
    logits, targets = cross_fitted_logits(config, prepared, backbone, out_dir / "cross-fit", folds)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / OUT_OF_FOLD_FILE, logits=logits[own], targets=targets[own])
    review = review_outputs(logits[own], targets[own], "classification")
    return ReviewRun(review.of_rows(np.flatnonzero(own)), folds)
