"""The contrastive stage (strategy `contrastive`): pair sampling, loss, a tuned encoder the
frozen stage loads, and resume after a kill. Tiny random BERTs, CPU."""

import numpy as np
import pytest
import torch

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.model.batching import Encoded
from finetune_core.model.features import cache_key
from finetune_core.model.heads import resolve_pooling
from finetune_core.serving.predictor import load_model_dir
from finetune_core.training import stages
from finetune_core.training.contrastive import (
    centroid_accuracy,
    cosine_similarity_loss,
    sample_pairs,
    train_contrastive,
)
from tests.training.stage_helpers import Killed, easy_task_config, kill_after, write_easy_task


@pytest.fixture
def few_shot(tmp_path):
    return write_easy_task(tmp_path, 36, 40)


def make_config(files, backbone, **training):
    base = {
        "strategy": "contrastive",
        "contrastive": {"epochs": 2, "learning_rate": 1e-3, "pairs_per_example": 2, "batch_size": 8},
        "frozen": {"epochs": 2, "learning_rate": 1e-2},
        "unfrozen": {"epochs": 1, "learning_rate": 1e-3},
        "batch_size": 8,
        "max_length": 16,
        "cache_dir": str(files / "cache"),
    }
    base.update(training)
    return easy_task_config(files, backbone, base)


def test_pairs_are_seeded_balanced_and_labelled_by_class():
    labels = np.array([0, 0, 0, 1, 1, 2])
    first, second, similar = sample_pairs(labels, 3, np.random.default_rng(0))
    again = sample_pairs(labels, 3, np.random.default_rng(0))
    assert all(np.array_equal(x, y) for x, y in zip((first, second, similar), again))
    assert len(first) == 2 * 3 * len(labels) and similar.sum() == len(first) / 2  # half similar
    assert np.array_equal(labels[first] == labels[second], similar == 1.0)
    alone = (first == 5) & (similar == 1.0)  # class 2 has one row: it pairs with itself
    assert np.all(second[alone] == 5)
    assert len(sample_pairs(labels, 3, np.random.default_rng(0), max_pairs=7)[0]) == 7


def test_loss_is_zero_when_cosines_match_the_targets_and_centroids_classify():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    assert float(cosine_similarity_loss(a, b, torch.tensor([1.0, 0.0]))) == pytest.approx(0.0)
    assert float(cosine_similarity_loss(a, b, torch.tensor([0.0, 1.0]))) == pytest.approx(1.0)
    train = torch.tensor([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.1, 0.8]])
    val = torch.tensor([[1.0, 0.2], [0.2, 1.0]])
    assert centroid_accuracy(train, np.array([0, 0, 1, 1]), val, np.array([0, 1])) == 1.0
    assert centroid_accuracy(train, np.array([0, 0, 1, 1]), val, np.array([1, 0])) == 0.0


def test_contrastive_stage_tunes_an_encoder_the_frozen_stage_loads(few_shot, tiny_backbone):
    config = make_config(few_shot, tiny_backbone)
    prepared = prepare_splits(config, few_shot / "data")
    seen = []
    result = train_contrastive(
        config, prepared, str(tiny_backbone), few_shot / "tuned", lambda *event: seen.append(event)
    )
    assert result.epochs_run == 2 and [epoch for _, epoch, _ in seen] == [1, 2]
    assert all("val_centroid_accuracy" in metrics and "train_loss" in metrics for _, _, metrics in seen)
    assert resolve_pooling("auto", str(few_shot / "tuned")) == "mean"  # the embedding it tuned
    empty = Encoded(input_ids=[[1, 2]], pad_id=0)
    assert cache_key(str(few_shot / "tuned"), empty, 16, "fp32", "mean") != cache_key(
        str(tiny_backbone), empty, 16, "fp32", "mean"
    )  # tuned features never come from the original's cache
    frozen = stages.train_frozen(config, prepared, str(few_shot / "tuned"), few_shot / "frozen")
    _, _, meta = load_model_dir(few_shot / "frozen")
    assert frozen.epochs_run == 2 and meta.pooling == "mean" and meta.backbone == str(few_shot / "tuned")
    with pytest.raises(Exception, match="contrastive needs task classification"):
        validate_config({**config.model_dump(mode="json"), "task": "regression"})


def test_resume_reaches_the_same_encoder_as_an_uninterrupted_run(few_shot, tiny_backbone):
    config = make_config(few_shot, tiny_backbone, contrastive={"epochs": 3, "pairs_per_example": 2})
    prepared = prepare_splits(config, few_shot / "data")
    straight = few_shot / "straight"
    expected = train_contrastive(config, prepared, str(tiny_backbone), straight / "tuned", None, straight / "ckpt")

    run = few_shot / "killed"
    with pytest.raises(Killed):
        kill = kill_after("contrastive", 2)
        train_contrastive(config, prepared, str(tiny_backbone), run / "tuned", kill, run / "ckpt")
    resumed = train_contrastive(config, prepared, str(tiny_backbone), run / "tuned", None, run / "ckpt", resume=True)

    assert resumed.resumed_after_epoch == 2
    assert resumed.history == expected.history
    from transformers import AutoModel

    a, b = (AutoModel.from_pretrained(d / "tuned").state_dict() for d in (straight, run))
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = train_contrastive(config, prepared, str(tiny_backbone), run / "tuned", None, run / "ckpt", resume=True)
    assert again.history == expected.history  # a finished stage is not trained again
