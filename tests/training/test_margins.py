"""The label review's second reading: stage 2 records each train row's margin in its training
batch per epoch (finetune_core.training.margins), kept across a resume; the area under the margin
flags the rows the model kept disagreeing with (label_review.review_margins)."""

import numpy as np
import pytest
import torch

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.label_review import review_margins
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.margins import MarginRecorder, read_margins
from finetune_core.training.stage_setup import StageInputs
from tests.datasets import easy_sentiment


def test_a_margin_is_the_given_logit_less_the_largest_other(tmp_path):
    path = tmp_path / "margins.npz"
    recorder = MarginRecorder.start(path, epochs=2, targets=torch.tensor([0, 1, 2, 1]), resume=False)
    logits = torch.tensor([[0.5, 2.0, 1.0], [3.0, 1.0, -1.0]])  # rows 2 (given 2) and 0 (given 0)
    recorder.hearing(0)(np.array([2, 0]), logits)
    recorder.end_epoch(0)
    margins, rival, targets = read_margins(path)
    np.testing.assert_allclose(margins[0, [2, 0]], [1.0 - 2.0, 3.0 - 1.0])
    assert rival[0, 2] == 1 and rival[0, 0] == 1
    assert np.isnan(margins[0, [1, 3]]).all() and np.isnan(margins[1]).all()  # not heard: not guessed
    assert targets.tolist() == [0, 1, 2, 1]
    resumed = MarginRecorder.start(path, epochs=2, targets=torch.tensor([0, 1, 2, 1]), resume=True)
    np.testing.assert_array_equal(resumed.margins, margins)  # a resumed stage keeps the epochs already heard
    fresh = MarginRecorder.start(path, epochs=2, targets=torch.tensor([0, 1, 2, 1]), resume=False)
    assert np.isnan(fresh.margins).all()


def test_the_second_reading_flags_rows_whose_mean_margin_stayed_below_zero():
    margins = np.array(
        [
            [2.0, -3.0, -1.0, 0.5, np.nan],
            [3.0, -2.0, 0.5, -1.0, np.nan],
            [np.nan, -1.0, 1.0, -1.0, np.nan],  # row 0 cut by a time budget in the last epoch
        ]
    )
    rival = np.array([[1, 2, 0, 0, -1], [1, 2, 0, 0, -1], [-1, 0, 0, 0, -1]])
    review = review_margins(margins, rival, np.array([0, 1, 1, 1, 0]))
    assert review.rows.tolist() == [1, 3]  # mean -2 first, then -0.5; row 2's mean is +0.17
    assert review.given == [1, 1] and review.suggested == [2, 0]  # the rival heard most often
    np.testing.assert_allclose(review.score, [-2.0, -0.5])
    assert review.total == 4  # row 4 was never trained on


@pytest.fixture
def flipped_task(tmp_path):
    train = easy_sentiment(240, 0)
    planted = np.arange(5, 240, 24)  # ten rows
    train.loc[planted, "label"] = 1 - train.loc[planted, "label"]
    train.to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(40, 1).to_csv(tmp_path / "test.csv", index=False)
    return tmp_path, planted


def test_stage_two_records_margins_that_find_planted_flips(flipped_task, tiny_backbone):
    files, planted = flipped_task
    raw = {
        "data": {
            "train": str(files / "train.csv"),
            "test": str(files / "test.csv"),
            "validation": str(files / "test.csv"),
        },
        "backbone": {"candidates": [str(tiny_backbone)], "pooling": "mean"},
        # a weak penalty: the tiny random BERT's mean-pooled features then separate easy_sentiment
        "training": {
            "frozen": {"epochs": 2, "regularization": 100.0},
            "unfrozen": {"epochs": 3, "learning_rate": 2e-3},
        },
    }
    config = validate_config(raw)
    prepared = prepare_splits(config, files / "data")
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), files / "frozen"))
    inputs = StageInputs(config, prepared, files / "frozen", files / "model", margins_file=files / "margins.npz")
    unfrozen_stage.train_unfrozen(inputs)
    margins, rival, targets = read_margins(files / "margins.npz")
    assert margins.shape == (3, 240) and not np.isnan(margins).any()  # every row, every epoch
    review = review_margins(margins, rival, targets)
    assert len(set(review.rows) & set(planted)) >= 8  # found
    assert len(set(review.rows[:10]) & set(planted)) >= 5  # ranked near the top (chance: 4 % of the rows)
