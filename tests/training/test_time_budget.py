"""`training.unfrozen.max_minutes`: stage 2 stops after the batch that passes its time budget,
mid-epoch if need be, and its speed counts the rows it trained, not the epoch it did not finish."""

import time

import numpy as np
import pytest
import torch

from finetune_core.data.prepare import prepare_splits
from finetune_core.model.backbone import load_for_task, load_tokenizer
from finetune_core.model.batching import encode
from finetune_core.model.heads import head_spec
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.device import Runtime
from finetune_core.training.loop import StepSettings, network_epoch
from finetune_core.training.losses import targets_tensor
from finetune_core.training.optim import make_optimizer
from finetune_core.training.stage_setup import StageInputs
from tests.datasets import easy_sentiment
from tests.training.stage_helpers import easy_task_config, write_easy_task

CPU = Runtime(device=torch.device("cpu"), precision="fp32")


def test_an_epoch_past_its_deadline_trains_one_batch_and_says_how_many_rows(tiny_backbone):
    model = load_for_task(str(tiny_backbone), "classification", ["0", "1"])
    frame = easy_sentiment(48, 0)
    encoded = encode(load_tokenizer(str(tiny_backbone)), frame["sentence"].tolist(), 16)
    targets = targets_tensor(frame["label"].to_numpy(), "classification")
    optimizer = make_optimizer([{"params": list(model.parameters())}], 1e-3)
    args = (model, head_spec(model), encoded, targets)
    settings = StepSettings("classification", optimizer, None, 16, 1.0, CPU)

    whole = network_epoch(*args, np.random.default_rng(0), settings)
    cut = network_epoch(*args, np.random.default_rng(1), settings, deadline=time.perf_counter())

    assert whole.rows == 48 and whole.loss > 0
    assert cut.rows == 16 and cut.loss > 0  # the deadline had passed: one step, then stop


def test_a_time_budget_stops_stage_2_mid_epoch_and_its_speed_counts_rows_trained(tmp_path, tiny_backbone):
    files = write_easy_task(tmp_path, 160, 60)
    config = easy_task_config(
        files,
        tiny_backbone,
        {
            "frozen": {"epochs": 1, "learning_rate": 1e-2},
            # 6 ms: over before the first batch ends
            "unfrozen": {"epochs": 3, "learning_rate": 1e-3, "max_minutes": 1e-4},
            "batch_size": 16,
            "max_length": 16,
        },
    )
    prepared = prepare_splits(config, files / "data")
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), files / "frozen"))
    result = unfrozen_stage.train_unfrozen(StageInputs(config, prepared, files / "frozen", files / "model"))

    assert result.extra["time_budget_reached"] and result.epochs_run == 1
    trained = result.samples_per_second * result.train_seconds
    assert 0 < trained <= 16 < result.train_examples  # one batch, not the epoch's rows
    assert trained == pytest.approx(round(trained))
