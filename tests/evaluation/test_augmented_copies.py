"""Label review of augmented data (finetune_core.data.copies): every copy names the row it was made from,
a row and its copies share a fold (else a flipped row's copy teaches the other folds its wrong label),
only the originals are reviewed, and a dropped row goes with its copies."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finetune_core.augmentation.eda import augment_frame, augment_prepared
from finetune_core.augmentation.pairs import with_swapped_pairs
from finetune_core.config.augmentation import AugmentationConfig
from finetune_core.data.columns import AUGMENTED, LABEL, SOURCE, TEXT, TEXT_PAIR
from finetune_core.data.copies import Copies, train_copies
from finetune_core.data.folding import fold_validation_into_train
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.label_review import fold_assignment, originals_by_margins
from finetune_core.evaluation.suspect_labels import OUT_OF_FOLD_FILE, review_train_split, without_rows
from tests.training.stage_helpers import easy_task_config, write_easy_task


def test_every_copy_names_the_row_it_was_made_from():
    pairs = pd.DataFrame({TEXT: ["a0 x y", "a1 x y", "a2 x y"], TEXT_PAIR: ["b0", "b1", "b2"], LABEL: [0, 1, 0]})
    eda = AugmentationConfig(enabled=True, synonyms="none", operations={"swap": 1.0, "delete": 0.0})
    both = with_swapped_pairs(augment_frame(pairs, eda, seed=0))  # EDA copies, then every row swapped
    assert both[SOURCE].tolist() == [0, 1, 2] * 4
    assert both[AUGMENTED].tolist() == [False] * 3 + [True] * 9
    assert (both[LABEL].to_numpy() == pairs[LABEL].to_numpy()[both[SOURCE]]).all()


def test_a_row_and_its_copies_share_a_fold_and_classes_stay_stratified():
    groups = np.repeat(np.arange(40), 3)  # each row with two copies
    targets = (groups % 4 == 0).astype(int)
    assignment = fold_assignment(targets, "classification", 5, seed=0, groups=groups)
    assert all(len(set(assignment[groups == g])) == 1 for g in range(40))
    assert all(set(targets[assignment == fold]) == {0, 1} for fold in range(5))
    alone = fold_assignment(targets, "classification", 5, seed=0)  # no groups: rows fold one by one
    assert any(len(set(alone[groups == g])) > 1 for g in range(40))


def test_the_second_reading_reviews_the_originals_in_their_train_positions():
    margins = np.array([[-1.0, 2.0, -3.0, -1.0]])  # rows 0, 1 originals; 2, 3 their copies
    rival, targets = np.zeros((1, 4), dtype=np.int64), np.array([1, 1, 1, 1])
    copies = Copies(groups=np.array([0, 1, 0, 1]), original=np.array([True, True, False, False]))
    review = originals_by_margins(margins, rival, targets, copies)
    assert review.rows.tolist() == [0] and review.total == 2
    assert originals_by_margins(margins, rival, targets).rows.tolist() == [2, 0, 3]  # without: copies too


def test_the_review_reads_originals_and_a_dropped_row_goes_with_its_copies(tiny_backbone, tmp_path):
    files = write_easy_task(tmp_path, 60, 8)
    config = easy_task_config(files, tiny_backbone, {"batch_size": 8, "max_length": 16, "cache_dir": str(tmp_path)})
    config = config.model_copy(update={"augmentation": AugmentationConfig(enabled=True, synonyms="none")})
    augmented, _ = augment_prepared(config, prepare_splits(config, files / "data"))
    copies = train_copies(augmented.paths["train"])
    originals = int(copies.original.sum())
    assert len(copies.groups) == 2 * originals

    run = review_train_split(config, augmented, str(tiny_backbone), tmp_path / "review")
    assert run.review.total == originals and copies.original[run.review.rows].all()
    with np.load(tmp_path / "review" / OUT_OF_FOLD_FILE) as saved:
        assert len(saved["targets"]) == originals  # the temperature's rows: the originals

    kept = without_rows(augmented, np.array([0]), tmp_path / "review")
    assert kept.rows["train"] == 2 * originals - 2  # row 0 and its copy
    assert 0 not in set(pq.read_table(kept.paths["train"]).column(SOURCE).to_pylist())

    folded = train_copies(fold_validation_into_train(augmented).paths["train"])
    added = folded.groups[len(copies.groups) :]  # validation rows appended: originals, each its own group
    assert folded.original[len(copies.groups) :].all() and added.min() > copies.groups.max()
    assert len(set(added)) == len(added)
