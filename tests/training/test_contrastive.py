"""The contrastive stage (strategy `contrastive`): pair sampling, loss, a tuned encoder the
frozen stage loads, and resume after a kill. Tiny random BERTs, CPU."""

import numpy as np
import pytest
import torch

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.model.backbone import load_tokenizer
from finetune_core.model.batching import Encoded
from finetune_core.model.dropout_masks import STAGE_MASKS
from finetune_core.model.features import cache_key
from finetune_core.model.heads import head_spec, resolve_pooling
from finetune_core.serving.predictor import load_model_dir
from finetune_core.training import frozen_stage
from finetune_core.training.contrastive import (
    _embed,
    _embed_pairs,
    centroid_accuracy,
    cosine_similarity_loss,
    pair_count,
    sample_pairs,
    train_contrastive,
)
from finetune_core.training.encoded_splits import split_tokens
from finetune_core.training.stage_setup import StageInputs
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


def test_default_pairs_are_setfits_oversampling_of_every_pair():
    labels = np.array([0, 0, 0, 1, 1, 2])  # 4 similar unordered pairs, 11 dissimilar
    first, second, similar = sample_pairs(labels, None, np.random.default_rng(0))
    assert len(first) == pair_count(labels, None, 10**6) == 2 * 11 and similar.sum() == 11  # balanced
    assert np.array_equal(labels[first] == labels[second], similar == 1.0) and not np.any(first == second)
    drawn = {tuple(sorted(p)) for p in zip(first.tolist(), second.tolist())}
    assert drawn == {(i, j) for i in range(6) for j in range(i + 1, 6)}  # every pair at least once
    again = sample_pairs(labels, None, np.random.default_rng(0))
    assert all(np.array_equal(x, y) for x, y in zip((first, second, similar), again))
    assert len(sample_pairs(labels, None, np.random.default_rng(0), max_pairs=5)[0]) == pair_count(labels, None, 5)
    assert pair_count(np.zeros(4), None, 100) == 6  # one class: similar pairs only


def test_self_pairs_add_each_row_with_itself_as_similar():
    labels = np.array([0, 0, 0, 1, 1, 2])  # 4 + 6 self = 10 similar, 11 dissimilar
    first, second, similar = sample_pairs(labels, None, np.random.default_rng(0), self_pairs=True)
    assert len(first) == pair_count(labels, None, 10**6, self_pairs=True) == 2 * 11
    selves = {int(row) for row, other in zip(first, second) if row == other}
    assert selves == set(range(6)) and np.all(similar[first == second] == 1.0)


def test_encode_sides_auto_follows_the_rows_per_class():
    from finetune_core.training.contrastive import SEPARATE_SIDES_UP_TO_ROWS_PER_CLASS as LIMIT
    from finetune_core.training.contrastive import pair_encoding

    few, many = np.repeat([0, 1], LIMIT), np.repeat([0, 1], LIMIT + 1)
    assert pair_encoding("auto", None, few) == ("separately", True)
    assert pair_encoding("auto", None, many) == ("once", False)
    assert pair_encoding("once", True, few) == ("once", True) and pair_encoding("separately", False, many)[1] is False


def test_learning_rate_none_follows_the_rows_per_class():
    from finetune_core.training.contrastive import SEPARATE_SIDES_UP_TO_ROWS_PER_CLASS as LIMIT
    from finetune_core.training.contrastive import pair_learning_rate

    few, many = np.repeat([0, 1], LIMIT), np.repeat([0, 1], LIMIT + 1)
    assert pair_learning_rate(None, few) == 6e-5 and pair_learning_rate(None, many) == 2e-5
    assert pair_learning_rate(1e-4, few) == 1e-4


def test_sides_encoded_separately_get_their_own_dropout(few_shot, tiny_backbone):
    # in training mode the same row on both sides differs by its dropout masks: an identical pair
    # still has a loss to learn from; encoded once, it is exactly the same vector (no signal)
    from transformers import AutoModel

    from finetune_core.config.sections import TrainingConfig
    from finetune_core.training.contrastive import _embed_sides
    from finetune_core.training.device import runtime_for

    model = AutoModel.from_pretrained(tiny_backbone, hidden_dropout_prob=0.3).train()
    runtime = runtime_for(TrainingConfig())  # the default precision
    encoded = Encoded(input_ids=[[2, 5, 6, 3], [2, 7, 3]], pad_id=0)
    rows = np.array([0, 1])
    a, b = _embed_sides(model, "mean", encoded, rows, rows, runtime)
    assert not torch.allclose(a, b)
    a, b = _embed_pairs(model, "mean", encoded, rows, rows, runtime)
    assert torch.equal(a, b)
    config = make_config(
        few_shot, tiny_backbone, contrastive={"epochs": 2, "encode_sides": "separately", "self_pairs": True}
    )
    result = train_contrastive(
        StageInputs(config, prepare_splits(config, few_shot / "data"), str(tiny_backbone), few_shot / "t")
    )
    assert result.epochs_run == 2 and all(np.isfinite(h["train_loss"]) for h in result.history)


def test_pairs_embed_each_distinct_row_once_with_the_same_vectors(tiny_backbone):
    from transformers import AutoModel

    from finetune_core.config.sections import TrainingConfig
    from finetune_core.training.device import runtime_for

    model, runtime = AutoModel.from_pretrained(tiny_backbone).eval(), runtime_for(TrainingConfig(precision="fp32"))
    encoded = Encoded(input_ids=[[2, 5, 6, 3], [2, 7, 3], [2, 8, 9, 10, 3]], pad_id=0)
    first, second = np.array([0, 1, 2, 0]), np.array([1, 1, 0, 2])
    with torch.no_grad():
        a, b = _embed_pairs(model, "mean", encoded, first, second, runtime)
        assert torch.allclose(a, _embed(model, "mean", encoded, first, runtime), atol=1e-5)
        assert torch.allclose(b, _embed(model, "mean", encoded, second, runtime), atol=1e-5)


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
        StageInputs(config, prepared, str(tiny_backbone), few_shot / "tuned", lambda *event: seen.append(event))
    )
    assert result.epochs_run == 2 and [epoch for _, epoch, _ in seen] == [1, 2]
    assert result.extra["peak_learning_rate"] == 1e-3  # as configured
    assert result.extra["dropout_masks"] == "torch"  # fixed (dropout_masks.STAGE_MASKS)
    assert all("val_centroid_accuracy" in metrics and "train_loss" in metrics for _, _, metrics in seen)
    # the embedding it tuned, at unit length (the cosine loss tuned directions only)
    assert resolve_pooling("auto", str(few_shot / "tuned")) == "normalized-mean"
    empty = Encoded(input_ids=[[1, 2]], pad_id=0)
    assert cache_key(str(few_shot / "tuned"), empty, 16, "fp32", "mean") != cache_key(
        str(tiny_backbone), empty, 16, "fp32", "mean"
    )  # tuned features never come from the original's cache
    frozen = frozen_stage.train_frozen(StageInputs(config, prepared, str(few_shot / "tuned"), few_shot / "frozen"))
    _, _, meta = load_model_dir(few_shot / "frozen")
    assert frozen.epochs_run == 2 and meta.pooling == "normalized-mean" and meta.backbone == str(few_shot / "tuned")
    model, tokenizer, _ = load_model_dir(few_shot / "frozen")
    spec = head_spec(model, meta.pooling)
    features = spec.features(model, dict(tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")))
    torch.testing.assert_close(features.norm(dim=1), torch.ones(2))  # what the head reads and serves
    with pytest.raises(Exception, match="contrastive needs task classification"):
        validate_config({**config.model_dump(mode="json"), "task": "regression"})


def test_resume_reaches_the_same_encoder_as_an_uninterrupted_run(few_shot, tiny_backbone, monkeypatch):
    monkeypatch.setitem(STAGE_MASKS, "contrastive", "numpy")  # NumPy's masks: drawn from the checkpointed RNG
    contrastive = {"epochs": 3, "pairs_per_example": 2}
    config = make_config(few_shot, tiny_backbone, contrastive=contrastive)
    prepared = prepare_splits(config, few_shot / "data")
    straight = few_shot / "straight"
    expected = train_contrastive(
        StageInputs(config, prepared, str(tiny_backbone), straight / "tuned", None, straight / "ckpt")
    )

    run = few_shot / "killed"
    with pytest.raises(Killed):
        kill = kill_after("contrastive", 2)
        train_contrastive(StageInputs(config, prepared, str(tiny_backbone), run / "tuned", kill, run / "ckpt"))
    resumed = train_contrastive(
        StageInputs(config, prepared, str(tiny_backbone), run / "tuned", None, run / "ckpt", resume=True)
    )

    assert resumed.resumed_after_epoch == 2 and resumed.extra["dropout_masks"] == "numpy"
    assert resumed.history == expected.history
    assert "numpy" not in (straight / "tuned" / "config.json").read_text()  # the saved encoder is a plain one
    from transformers import AutoModel

    a, b = (AutoModel.from_pretrained(d / "tuned").state_dict() for d in (straight, run))
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = train_contrastive(
        StageInputs(config, prepared, str(tiny_backbone), run / "tuned", None, run / "ckpt", resume=True)
    )
    assert again.history == expected.history  # a finished stage is not trained again


def test_sentence_pairs_are_embedded_as_pairs(tmp_path, tiny_backbone):
    from tests.datasets import easy_sentiment

    for name, rows, seed in (("train", 24, 0), ("test", 10, 1)):
        frame = easy_sentiment(rows, seed)
        frame["sentence2"] = easy_sentiment(rows, seed + 5)["sentence"]
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    raw = make_config(tmp_path, tiny_backbone).model_dump(mode="json")
    raw["data"]["text_pair_column"] = "sentence2"
    config = validate_config(raw)
    prepared = prepare_splits(config, tmp_path / "data")
    tokenizer = load_tokenizer(str(tiny_backbone), False)
    assert split_tokens(prepared, "train", tokenizer, 16)[0].token_type_ids is not None  # what the stage reads
    result = train_contrastive(StageInputs(config, prepared, str(tiny_backbone), tmp_path / "tuned"))
    assert result.epochs_run == 2 and all(np.isfinite(h["train_loss"]) for h in result.history)
    frozen = frozen_stage.train_frozen(StageInputs(config, prepared, str(tmp_path / "tuned"), tmp_path / "frozen"))
    _, _, meta = load_model_dir(tmp_path / "frozen")
    assert frozen.epochs_run == 2 and meta.text_pair_column == "sentence2"
    assert meta.pooling == "normalized-mean"  # tuned on pairs: the head reads what was tuned, not [CLS]
