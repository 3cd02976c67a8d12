"""`training.metric` picks the epoch; `training.class_weights` weighs the cross-entropy."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.errors import ConfigError
from finetune_core.metric_table import primary_metric
from finetune_core.training import frozen_stage, stage_setup, unfrozen_stage
from finetune_core.training.losses import class_weight_vector, compute_loss
from finetune_core.training.stage_setup import StageInputs
from tests.datasets import easy_sentiment


def _config(tmp_path, task="classification", **training):
    return validate_config(
        {
            "task": task,
            "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "train.csv")},
            "training": training,
        }
    )


class _Weights:
    def __init__(self):
        self.value = torch.zeros(1)

    def state_dict(self):
        return {"w": self.value}

    def load_state_dict(self, state):
        self.value = state["w"]


def _best_epoch(config) -> int:
    # epoch 1 has the better accuracy, epoch 2 the better macro-F1
    history = iter([{"accuracy": 0.8, "f1_macro": 0.5, "loss": 0.4}, {"accuracy": 0.7, "f1_macro": 0.6, "loss": 0.5}])
    prepared = SimpleNamespace(task=config.task, rows={"train": 10})
    loop = stage_setup.stage_loop(stage_setup.StageInputs(config, prepared, "", Path()), "unfrozen", 2)
    weights = _Weights()

    def train_epoch(epoch):
        weights.value = torch.full((1,), float(epoch))
        return 0.1

    result = loop.run(weights, train_epoch, lambda: next(history))
    assert float(weights.value) == result.best_epoch  # the restored weights are the chosen epoch's
    return result.best_epoch


def test_training_metric_changes_the_epoch_kept(tmp_path):
    assert _best_epoch(_config(tmp_path)) == 1  # default: accuracy
    assert _best_epoch(_config(tmp_path, metric="f1_macro")) == 2
    assert _best_epoch(_config(tmp_path, metric="loss")) == 1  # smaller is better


def test_training_metric_defaults_and_validation(tmp_path):
    assert primary_metric("classification") == ("accuracy", True)
    assert primary_metric("regression") == ("spearman", True)
    assert primary_metric("regression", "mse") == ("mse", False)
    with pytest.raises(ConfigError, match="training.metric"):
        _config(tmp_path, metric="spearman")  # not a classification metric
    assert _config(tmp_path, "regression", metric="pearson").training.metric == "pearson"


def test_gates_compare_the_configured_metric():
    from finetune_core.config.gates import GatesConfig

    assert GatesConfig().regression_rules("regression") == {"spearman": 0.0}
    assert GatesConfig().regression_rules("classification", "f1_macro") == {"f1_macro": 0.0}


def test_balanced_class_weights_change_the_loss():
    weights = class_weight_vector("balanced", ["a", "b"], np.array([0, 0, 0, 1]))
    assert weights.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    logits, targets = torch.randn(4, 2), torch.tensor([0, 0, 0, 1])
    plain = compute_loss(logits, targets, "classification")
    weighted = compute_loss(logits, targets, "classification", weights)
    assert torch.allclose(weighted, F.cross_entropy(logits, targets, weight=weights))
    assert not torch.allclose(plain, weighted)
    assert class_weight_vector("none", ["a", "b"], np.array([0, 1])) is None
    assert class_weight_vector({"b": 3.0}, ["a", "b"], np.array([0, 1])).tolist() == [1.0, 3.0]


def test_class_weights_naming_an_unknown_label_is_a_config_error(tmp_path):
    easy_sentiment(40, 0).to_csv(tmp_path / "train.csv", index=False)
    config = _config(tmp_path, class_weights={"1": 2.0, "maybe": 3.0})
    with pytest.raises(ConfigError, match=r"training.class_weights.*maybe"):
        prepare_splits(config, tmp_path / "data")
    with pytest.raises(ConfigError, match="training.class_weights"):
        _config(tmp_path, "regression", class_weights="balanced")


def test_balanced_class_weights_train(tmp_path, tiny_backbone):
    easy_sentiment(60, 0).to_csv(tmp_path / "train.csv", index=False)
    config = validate_config(
        {
            "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "train.csv")},
            "backbone": {"candidates": [str(tiny_backbone)]},
            "training": {
                "frozen": {"epochs": 1},
                "unfrozen": {"epochs": 1},
                "class_weights": "balanced",
                "max_length": 16,
                "cache_dir": str(tmp_path / "cache"),
            },
        }
    )
    prepared = prepare_splits(config, tmp_path / "data")
    frozen = frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), tmp_path / "frozen"))
    unfrozen = unfrozen_stage.train_unfrozen(StageInputs(config, prepared, tmp_path / "frozen", tmp_path / "unfrozen"))
    assert np.isfinite(frozen.history[0]["train_loss"]) and np.isfinite(unfrozen.history[0]["train_loss"])
