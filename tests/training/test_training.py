"""Training-stage behaviour on a tiny random BERT: what is frozen stays frozen, losses follow
the task, an easy task is learned, and a seeded run is reproducible."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.model.inference import head_outputs
from finetune_core.serving.predictor import Predictor, load_model_dir
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.losses import compute_loss
from finetune_core.training.stage_setup import StageInputs
from tests.datasets import easy_sentiment


@pytest.fixture
def easy_task(tmp_path, tiny_backbone):
    easy_sentiment(240, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(80, 1).to_csv(tmp_path / "test.csv", index=False)
    config = validate_config(
        {
            "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")},
            "backbone": {"candidates": [str(tiny_backbone)]},
            "training": {
                "frozen": {"epochs": 2, "learning_rate": 1e-2},
                "unfrozen": {"epochs": 5, "learning_rate": 2e-3, "warmup_ratio": 0.0, "layer_lr_decay": 1.0},
                "batch_size": 16,
                "max_length": 16,
                "precision": "fp32",
                "cache_dir": str(tmp_path / "cache"),
            },
        }
    )
    return config, prepare_splits(config, tmp_path / "data"), tmp_path


def state(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_frozen_stage_trains_only_the_head(easy_task, tiny_backbone):
    config, prepared, tmp = easy_task
    from finetune_core.model.backbone import load_for_task

    torch.manual_seed(config.training.seed)
    before = state(load_for_task(str(tiny_backbone), "classification", prepared.labels))
    epochs = []
    frozen_stage.train_frozen(
        StageInputs(config, prepared, str(tiny_backbone), tmp / "frozen", lambda s, e, m: epochs.append((s, e, m)))
    )
    after_model, _, meta = load_model_dir(tmp / "frozen")
    after = state(after_model)
    head = {"classifier.weight", "classifier.bias"}
    for name in after:
        changed = not torch.equal(before[name], after[name])
        assert changed == (name in head), name
    assert [(s, e) for s, e, _ in epochs] == [("frozen", 1), ("frozen", 2)]
    assert {"train_loss", "val_accuracy", "val_f1_macro", "learning_rate"} <= set(epochs[0][2])
    assert meta.labels == ["0", "1"] and meta.task == "classification"


def test_unfrozen_stage_trains_everything_and_learns(easy_task, tiny_backbone):
    config, prepared, tmp = easy_task
    # everything, the token-embedding matrix included, whatever freeze_word_embeddings' default: a
    # random tiny BERT's token vectors carry no meaning until they learn, and its pooler is near-constant
    config.training.unfrozen.freeze_word_embeddings = False
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), tmp / "frozen"))
    before = state(load_model_dir(tmp / "frozen")[0])
    result = unfrozen_stage.train_unfrozen(StageInputs(config, prepared, tmp / "frozen", tmp / "model"))
    after = state(load_model_dir(tmp / "model")[0])
    assert not torch.equal(
        before["bert.encoder.layer.0.attention.self.query.weight"],
        after["bert.encoder.layer.0.attention.self.query.weight"],
    )
    assert not torch.equal(
        before["bert.embeddings.word_embeddings.weight"], after["bert.embeddings.word_embeddings.weight"]
    )
    assert result.train_examples == prepared.rows["train"] and result.samples_per_second > 0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    metrics = evaluate_model(config, prepared, tmp / "model")
    assert metrics["accuracy"] >= 0.9, metrics


def test_seeded_runs_are_identical(easy_task, tiny_backbone):
    config, prepared, tmp = easy_task
    config.training.unfrozen.epochs = 1
    results = []
    for attempt in ("a", "b"):
        frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), tmp / attempt / "frozen"))
        unfrozen_stage.train_unfrozen(StageInputs(config, prepared, tmp / attempt / "frozen", tmp / attempt / "model"))
        results.append(evaluate_model(config, prepared, tmp / attempt / "model"))
    assert results[0] == results[1]


def test_regression_head_has_one_output_and_mse_loss(tmp_path, tiny_backbone):
    frame = easy_sentiment(120, 0).assign(label=lambda f: f["label"] * 4.0 + 1.0)
    frame.to_csv(tmp_path / "train.csv", index=False)
    config = validate_config(
        {
            "task": "regression",
            "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "train.csv")},
            "backbone": {"candidates": [str(tiny_backbone)]},
            "training": {"frozen": {"epochs": 1}, "unfrozen": {"epochs": 1, "learning_rate": 1e-3}, "max_length": 16},
        }
    )
    prepared = prepare_splits(config, tmp_path / "data")
    assert prepared.target_mean == pytest.approx(3.0, abs=0.2)
    result = frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), tmp_path / "frozen"))
    assert {"val_mse", "val_mae", "val_r2", "val_spearman"} <= set(result.history[0])
    model, _, meta = load_model_dir(tmp_path / "frozen")
    assert model.config.num_labels == 1 and meta.task == "regression"
    predictions = Predictor.load(tmp_path / "frozen").predict_texts(["good movie", "bad movie"])
    assert list(predictions.columns) == ["prediction"] and predictions["prediction"].between(-20, 30).all()
    metrics = evaluate_model(config, prepared, tmp_path / "frozen")
    assert {"mse", "mae", "r2", "pearson", "spearman"} == set(metrics)


def test_losses_follow_the_task():
    logits, classes = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    assert torch.allclose(compute_loss(logits, classes, "classification"), F.cross_entropy(logits, classes))
    values, targets = torch.randn(4, 1), torch.randn(4)
    assert torch.allclose(compute_loss(values, targets, "regression"), F.mse_loss(values.squeeze(-1), targets))


def test_head_outputs_in_batches_are_the_outputs_on_every_row():
    from transformers import BertConfig, BertForSequenceClassification

    from finetune_core.model.heads import head_spec

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=768, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).eval()
    head = head_spec(model).head
    for rows in (0, 1, 129, 300):  # 129 and 300 leave a remainder of 1 and of 44 rows
        features = torch.randn(rows, 768)
        with torch.inference_mode():
            whole = head(model, features).float().numpy()
        batched = head_outputs(model, head, features, 128)
        assert batched.shape == whole.shape and np.array_equal(batched, whole)


def test_predictor_probabilities_and_input_column(easy_task, tiny_backbone):
    config, prepared, tmp = easy_task
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), tmp / "frozen"))
    predictor = Predictor.load(tmp / "frozen")
    frame = predictor.predict_frame(pd.DataFrame({"sentence": ["a great film", "an awful film", "the story"]}))
    assert list(frame.columns) == ["label", "probability_0", "probability_1"]
    assert np.allclose(frame[["probability_0", "probability_1"]].sum(axis=1), 1.0)
    assert frame["label"].isin(["0", "1"]).all()
    with pytest.raises(ValueError, match=r"needs column\(s\) 'sentence'"):
        predictor.predict_frame(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    # a temperature > 1 softens probabilities without changing the predicted label
    predictor.meta.temperature = 5.0
    softer = predictor.predict_frame(pd.DataFrame({"sentence": ["a great film", "an awful film", "the story"]}))
    assert (softer["label"] == frame["label"]).all()
    assert (
        softer[["probability_0", "probability_1"]].max(axis=1)
        <= frame[["probability_0", "probability_1"]].max(axis=1) + 1e-9
    ).all()
