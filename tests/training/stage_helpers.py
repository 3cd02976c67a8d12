"""Shared by the stage tests: an easy task written to files and its configuration, a callback
that kills a stage after an epoch, and a saved model's weights."""

from __future__ import annotations

from pathlib import Path

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.loading import validate_config
from finetune_core.serving.predictor import load_model_dir
from tests.datasets import easy_sentiment


def write_easy_task(directory: Path, train_rows: int, test_rows: int) -> Path:
    """``directory``/train.csv and test.csv of the easy sentiment task (seeds 0 and 1)."""
    easy_sentiment(train_rows, 0).to_csv(directory / "train.csv", index=False)
    easy_sentiment(test_rows, 1).to_csv(directory / "test.csv", index=False)
    return directory


def easy_task_config(files: Path, backbone: Path, training: dict) -> FinetuneConfig:
    return validate_config(
        {
            "data": {"train": str(files / "train.csv"), "test": str(files / "test.csv")},
            "backbone": {"candidates": [str(backbone)]},
            "training": training,
        }
    )


class Killed(Exception):
    pass


def kill_after(stage: str, epoch: int):
    """An epoch callback that raises ``Killed`` once ``stage`` has finished ``epoch``."""

    def callback(name, done, metrics):
        if (name, done) == (stage, epoch):
            raise Killed

    return callback


def weights(path: Path) -> dict:
    return {k: v.clone() for k, v in load_model_dir(path)[0].state_dict().items()}
