"""Progress reporting: the loops tell a reporter each step's batch total, every batch and each
epoch's end; training is the same with no reporter; data-parallel rank 0 reports through the
launching process. Tiny random BERT, CPU."""

import math

import numpy as np
import pytest
import torch

from finetune_core.data.prepare import prepare_splits
from finetune_core.model.batching import length_grouped_batches
from finetune_core.progress import epoch_line
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.loop import network_batches
from finetune_core.training.stage_setup import StageInputs
from tests.training.stage_helpers import easy_task_config, weights, write_easy_task


class Recorder:
    """A ProgressReporter keeping what it heard: one dict per started step."""

    def __init__(self):
        self.steps = []

    def start(self, task, total_batches, epoch=0, epochs=0):
        self.steps.append(
            {"task": task, "total": total_batches, "epoch": epoch, "epochs": epochs, "batches": 0, "samples": 0}
        )

    def advance(self, batches, samples, loss=None):
        step = self.steps[-1]
        step["batches"] += batches
        step["samples"] += samples
        step["last_loss"] = loss

    def end(self, metrics=None):
        self.steps[-1]["end"] = dict(metrics) if metrics is not None else None


@pytest.fixture
def files(tmp_path):
    return write_easy_task(tmp_path, 160, 60)


def config_for(files, backbone, **training):
    base = {
        "frozen": {"epochs": 2, "learning_rate": 1e-2},
        "unfrozen": {"epochs": 2, "learning_rate": 1e-3},
        "batch_size": 16,
        "eval_batch_size": 32,
        "max_length": 16,
        "precision": "fp32",
        "feature_cache": False,
    }
    base.update(training)
    return easy_task_config(files, backbone, base)


@pytest.mark.parametrize("rows", [0, 1, 15, 16, 17, 800, 801, 1700])
def test_network_batches_counts_length_grouped_batches(rows):
    lengths = np.random.default_rng(0).integers(1, 30, rows)
    assert network_batches(rows, 16) == len(length_grouped_batches(lengths, 16, np.random.default_rng(1)))


@pytest.mark.parametrize("solver", ["auto", "adamw"])
def test_the_stages_report_every_batch_with_the_right_totals(files, tiny_backbone, solver):
    config = config_for(files, tiny_backbone, frozen={"epochs": 2, "learning_rate": 1e-2, "solver": solver})
    prepared = prepare_splits(config, files / "data")
    train, validation = prepared.rows["train"], prepared.rows["validation"]
    heard = Recorder()
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), files / "frozen", progress=heard))
    unfrozen_stage.train_unfrozen(StageInputs(config, prepared, files / "frozen", files / "model", progress=heard))

    # auto, on these few rows: the head is fitted by full-batch L-BFGS, one step an epoch
    head_steps = 1 if solver == "auto" else math.ceil(train / 16)
    expected = [
        ("train features", math.ceil(train / 32), 0, 0),
        ("validation features", math.ceil(validation / 32), 0, 0),
        ("frozen", head_steps, 1, 2),
        ("frozen", head_steps, 2, 2),
        ("unfrozen", network_batches(train, 16), 1, 2),
        ("unfrozen", network_batches(train, 16), 2, 2),
    ]
    assert [(s["task"], s["total"], s["epoch"], s["epochs"]) for s in heard.steps] == expected
    for step in heard.steps:
        assert step["batches"] == step["total"]  # every batch, once
        assert step["samples"] == (validation if step["task"] == "validation features" else train)
    for step in heard.steps[2:]:  # epochs: the batch loss, then the epoch's summary
        assert isinstance(step["last_loss"], float)
        assert set(step["end"]) == {"train_loss", "val_accuracy", "samples_per_second"}
        assert step["end"]["samples_per_second"] > 0


def test_training_is_the_same_with_and_without_a_reporter(files, tiny_backbone):
    config = config_for(files, tiny_backbone)
    prepared = prepare_splits(config, files / "data")
    results = {}
    for name, progress in (("silent", None), ("watched", Recorder())):
        extra = {} if progress is None else {"progress": progress}
        frozen = frozen_stage.train_frozen(
            StageInputs(config, prepared, str(tiny_backbone), files / name / "frozen", **extra)
        )
        unfrozen = unfrozen_stage.train_unfrozen(
            StageInputs(config, prepared, files / name / "frozen", files / name / "model", **extra)
        )
        results[name] = (frozen.history, unfrozen.history, weights(files / name / "model"))
    silent, watched = results["silent"], results["watched"]
    assert silent[0] == watched[0] and silent[1] == watched[1]
    assert all(torch.equal(silent[2][k], watched[2][k]) for k in silent[2])


def test_data_parallel_rank_0_reports_to_the_launching_process(files, tiny_backbone):
    config = config_for(files, tiny_backbone, num_processes=2, frozen={"epochs": 1, "learning_rate": 1e-2})
    prepared = prepare_splits(config, files / "data")
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), files / "frozen"))
    heard = Recorder()
    unfrozen_stage.train_unfrozen(StageInputs(config, prepared, files / "frozen", files / "model", progress=heard))
    total = network_batches(prepared.rows["train"], 16)
    assert [(s["task"], s["total"], s["epoch"]) for s in heard.steps] == [("unfrozen", total, e) for e in (1, 2)]
    assert all(s["batches"] == total and s["samples"] == prepared.rows["train"] for s in heard.steps)  # global batches
    assert all(set(s["end"]) == {"train_loss", "val_accuracy", "samples_per_second"} for s in heard.steps)


def test_epoch_line():
    line = epoch_line("unfrozen", 2, 3, {"train_loss": 0.41234, "val_accuracy": 0.8125, "samples_per_second": 81.4})
    assert line == "unfrozen epoch 2/3: train_loss 0.4123 val_accuracy 0.8125 81 samples/s"
