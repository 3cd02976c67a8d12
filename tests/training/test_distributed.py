"""Data-parallel unfrozen stage (DDP) on 2 CPU processes (gloo) started by the ``local`` launcher
(torch elastic): same result as one process with the same global batch size; inside the flow,
rank 0 logs and the logged model loads."""

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.errors import ConfigError
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.serving.predictor import load_model_dir
from finetune_core.training import distributed, frozen_stage, unfrozen_stage
from finetune_core.training.margins import read_margins
from finetune_core.training.stage_setup import StageInputs
from tests.datasets import easy_sentiment


def _config(tmp_path, backbone, processes: int, tracking_uri: str | None = None, **training) -> dict:
    raw = {
        "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")},
        # mean pooling: the tiny random BERT's pooler output is nearly constant, so with it the
        # head only starts learning mid-way and one- and two-process runs could leave the
        # plateau an epoch apart; with mean-pooled features both learn from the first epoch
        "backbone": {"candidates": [str(backbone)], "pooling": "mean"},
        "training": {
            "frozen": {"epochs": 2, "learning_rate": 1e-2},
            "unfrozen": {"epochs": 4, "learning_rate": 2e-3, "warmup_ratio": 0.0, "layer_lr_decay": 1.0},
            "batch_size": 16,
            "max_length": 16,
            "precision": "fp32",
            "feature_cache": False,
            "num_processes": processes,
            **training,
        },
        "output_dir": str(tmp_path / "runs"),
    }
    if tracking_uri:
        raw["mlflow"] = {"tracking_uri": tracking_uri, "experiment": "ddp", "registered_model": "ddp-model"}
    return raw


@pytest.fixture
def easy_files(tmp_path):
    easy_sentiment(240, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(80, 1).to_csv(tmp_path / "test.csv", index=False)
    return tmp_path


def _without_dropout(backbone, target):
    """The same weights with dropout off, so one and two processes differ only by the order of
    floating-point sums (dropout masks would be drawn differently per rank)."""
    import shutil

    from transformers import BertConfig

    shutil.copytree(backbone, target)
    config = BertConfig.from_pretrained(target)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(target)
    return target


def test_two_processes_match_one_with_the_same_global_batch(easy_files, tiny_backbone):
    backbone = _without_dropout(tiny_backbone, easy_files / "backbone")
    results = {}
    for processes in (1, 2):
        config = validate_config(_config(easy_files, backbone, processes))
        prepared = prepare_splits(config, easy_files / f"data-{processes}")
        frozen_stage.train_frozen(StageInputs(config, prepared, str(backbone), easy_files / f"frozen-{processes}"))
        result = unfrozen_stage.train_unfrozen(
            StageInputs(
                config,
                prepared,
                easy_files / f"frozen-{processes}",
                easy_files / f"model-{processes}",
                checkpoints=easy_files / f"checkpoints-{processes}",
                margins_file=easy_files / f"margins-{processes}.npz",
            )
        )
        metrics = evaluate_model(config, prepared, easy_files / f"model-{processes}")
        results[processes] = (result, metrics["accuracy"])
    (single, single_accuracy), (double, double_accuracy) = results[1], results[2]
    assert double.extra["num_processes"] == 2 and double.epochs_run == single.epochs_run
    assert abs(double_accuracy - single_accuracy) <= 0.05
    assert single.history[-1]["train_loss"] < 0.8 * single.history[0]["train_loss"]  # it learned: not a flat plateau
    for a, b in zip(single.history, double.history, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
    assert (easy_files / "checkpoints-2" / "unfrozen").is_dir()  # rank 0 checkpointed
    one, two = (load_model_dir(easy_files / f"model-{n}")[0].state_dict() for n in (1, 2))
    for name, weight in one.items():
        torch.testing.assert_close(two[name], weight, atol=1e-4, rtol=1e-3, msg=name)
    # each rank heard its share of the rows; rank 0 gathered every row's margin, as one process heard them
    (margins_1, rival_1, _), (margins_2, rival_2, _) = (read_margins(easy_files / f"margins-{n}.npz") for n in (1, 2))
    assert not np.isnan(margins_2).any()
    np.testing.assert_allclose(margins_2, margins_1, atol=1e-3)
    np.testing.assert_array_equal(rival_2, rival_1)


def test_launcher_settings_are_checked(easy_files, tiny_backbone):
    with pytest.raises(ConfigError, match="launcher: torchrun"):
        validate_config(_config(easy_files, tiny_backbone, 2, torchrun_args=["--nnodes=2"]))
    with pytest.raises(ConfigError, match="num_processes"):
        validate_config(
            _config(easy_files, tiny_backbone, 2, launcher="torchrun", torchrun_args=["--nproc-per-node=4"])
        )
    config = validate_config(_config(easy_files, tiny_backbone, 1, launcher="torchrun"))
    assert distributed.needs_launch(config.training)  # torchrun even with one process here: other nodes join


def test_torchrun_command_is_what_other_nodes_run(tmp_path):
    path = tmp_path / "model.torchrun.pkl"
    single = distributed.torchrun_command(2, 1, [], path)
    assert single[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=2"] and "--standalone" in single
    multi = distributed.torchrun_command(1, 0, ["--nnodes=2", "--rdzv-endpoint=head:29400"], path)
    assert "--standalone" not in multi and multi[-3:] == ["-m", "finetune_core.training.worker", str(path)]


def test_flow_with_two_processes_logs_from_rank_0_and_the_model_loads(
    prefect_server, easy_files, tiny_backbone, tracking_uri
):
    from flows.finetune import finetune

    result = finetune(validate_config(_config(easy_files, tiny_backbone, 2, tracking_uri)))
    assert result.stages["unfrozen"]["extra"]["num_processes"] == 2
    client = MlflowClient(tracking_uri)
    history = client.get_metric_history(result.mlflow_run_id, "unfrozen/val_accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4]  # once per epoch: rank 0 only
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/ddp-model/{result.model_version}")
    predictions = model.predict(pd.DataFrame({"sentence": ["the film was great", "an awful boring story"]}))
    assert list(predictions["label"]) == ["1", "0"]


def test_multilabel_two_processes_match_one(tmp_path, tiny_backbone):
    """BCE with pos_weight and per-label outputs under DDP: the same losses as one process."""
    from tests.flows.test_multilabel import COLUMNS, reuters_files

    files = reuters_files(tmp_path, train_rows=96, test_rows=24)
    backbone = _without_dropout(tiny_backbone, tmp_path / "backbone")
    results = {}
    for processes in (1, 2):
        raw = _config(tmp_path, backbone, processes)
        raw["task"] = "multilabel"
        raw["data"] = {"train": str(files["train"]), "test": str(files["test"]), **COLUMNS}
        raw["training"]["unfrozen"]["epochs"] = 2
        config = validate_config(raw)
        prepared = prepare_splits(config, tmp_path / f"data-{processes}")
        frozen_stage.train_frozen(StageInputs(config, prepared, str(backbone), tmp_path / f"frozen-{processes}"))
        results[processes] = unfrozen_stage.train_unfrozen(
            StageInputs(config, prepared, tmp_path / f"frozen-{processes}", tmp_path / f"model-{processes}")
        )
    single, double = results[1], results[2]
    assert double.extra["num_processes"] == 2 and double.epochs_run == single.epochs_run == 2
    for a, b in zip(single.history, double.history, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
        assert abs(a["val_f1_macro"] - b["val_f1_macro"]) < 1e-6
