"""Cross-fitted out-of-fold logits of the contrastive recipe (tiny random BERT, CPU): every row's
logits come from an encoder tuned without it, the fold encoders are deleted, and the review on
them writes the logits the few-shot temperature is fitted on."""

import numpy as np
import pandas as pd

from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation import cross_fit
from finetune_core.evaluation.suspect_labels import OUT_OF_FOLD_FILE
from tests.training.stage_helpers import easy_task_config, write_easy_task


def _config(files, backbone):
    training = {
        "strategy": "contrastive",
        "contrastive": {"epochs": 1, "learning_rate": 1e-3, "pairs_per_example": 1, "batch_size": 8},
        "frozen": {"epochs": 1},
        "batch_size": 8,
        "max_length": 16,
        "cache_dir": str(files / "cache"),
    }
    return easy_task_config(files, backbone, training)


def test_each_fold_is_predicted_by_an_encoder_tuned_without_it(tiny_backbone, tmp_path, monkeypatch):
    from finetune_core.training import contrastive

    files = write_easy_task(tmp_path, 24, 8)
    config = _config(files, tiny_backbone)
    prepared = prepare_splits(config, files / "data")
    train_texts = pd.read_parquet(prepared.paths["train"])["text"].tolist()
    tuned_on = []  # the train texts each fold encoder saw
    real = contrastive.train_contrastive

    def spy(inputs):
        tuned_on.append(set(pd.read_parquet(inputs.prepared.paths["train"])["text"]))
        return real(inputs)

    monkeypatch.setattr(contrastive, "train_contrastive", spy)
    run = cross_fit.review_cross_fitted(config, prepared, str(tiny_backbone), tmp_path / "review")

    assert run.folds == cross_fit.CROSS_FIT_FOLDS == len(tuned_on)
    with np.load(tmp_path / "review" / OUT_OF_FOLD_FILE) as saved:
        logits, targets = saved["logits"], saved["targets"]
    assert logits.shape == (len(train_texts), 2) and np.isfinite(logits).all()
    assert targets.tolist() == pd.read_parquet(prepared.paths["train"])["label"].tolist()
    held = [set(train_texts) - seen for seen in tuned_on]  # each encoder's unseen rows: one fold
    assert all(held) and set.union(*held) == set(train_texts) and not set.intersection(*held)
    assert not (tmp_path / "review" / "cross-fit").exists()  # the fold encoders are deleted
    assert run.review is not None and run.review.total == len(train_texts)


def test_each_fold_head_weighs_its_penalty_as_the_served_head_does(tiny_backbone, tmp_path, monkeypatch):
    """A fold head sees fewer rows than the served head; with the same C its penalty weighs more, its
    logits shrink and the temperature fitted on them over-sharpens the served head. C scales with the
    rows: C_fold * rows_fold == C * rows (sklearn's objective C * sum(loss) + |W|^2 / 2)."""
    files = write_easy_task(tmp_path, 24, 8)
    config = _config(files, tiny_backbone)
    prepared = prepare_splits(config, files / "data")
    fitted = []  # (rows, C) of each fold head
    real = cross_fit.fit_linear_head

    def spy(features, targets, task, outputs, regularization):
        fitted.append((len(features), regularization))
        return real(features, targets, task, outputs, regularization)

    monkeypatch.setattr(cross_fit, "fit_linear_head", spy)
    cross_fit.cross_fitted_logits(config, prepared, str(tiny_backbone), tmp_path / "cross-fit")

    total, c = prepared.rows["train"], config.training.frozen.regularization
    assert len(fitted) == cross_fit.CROSS_FIT_FOLDS and all(rows < total for rows, _ in fitted)
    assert all(abs(rows * c_fold - total * c) < 1e-9 for rows, c_fold in fitted)


def test_a_row_and_its_augmented_copy_are_held_out_of_one_encoder_together(tiny_backbone, tmp_path, monkeypatch):
    from finetune_core.augmentation.eda import augment_prepared
    from finetune_core.config.augmentation import AugmentationConfig
    from finetune_core.data.columns import SOURCE
    from finetune_core.training import contrastive

    files = write_easy_task(tmp_path, 24, 8)
    config = _config(files, tiny_backbone)
    config = config.model_copy(update={"augmentation": AugmentationConfig(enabled=True, synonyms="none")})
    augmented, _ = augment_prepared(config, prepare_splits(config, files / "data"))
    fold_sources = []  # per fold encoder: how many rows of each source it was tuned on
    real = contrastive.train_contrastive

    def spy(inputs):
        fold_sources.append(pd.read_parquet(inputs.prepared.paths["train"])[SOURCE].value_counts())
        return real(inputs)

    monkeypatch.setattr(contrastive, "train_contrastive", spy)
    run = cross_fit.review_cross_fitted(config, augmented, str(tiny_backbone), tmp_path / "review")

    assert len(fold_sources) == 2 and all((counts == 2).all() for counts in fold_sources)  # row and copy, or neither
    originals = augmented.rows["train"] // 2
    assert run.review.total == originals and (run.review.rows < originals).all()  # originals come first
    with np.load(tmp_path / "review" / OUT_OF_FOLD_FILE) as saved:
        assert len(saved["targets"]) == originals
