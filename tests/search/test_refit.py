"""The winner's configuration under each `search.refit_on` (finetune_core.search.refit), without Prefect or MLflow."""

from __future__ import annotations

import pytest

from finetune_core.config.loading import validate_config
from finetune_core.search.refit import refit_on, winner_config

DATA = {"train": "train.csv", "test": "test.csv"}
BEST = {"training.unfrozen.learning_rate": 2e-4, "training.unfrozen.epochs": 4}


def config(refit_on: str, **training):
    return validate_config({"data": DATA, "training": training, "search": {"refit_on": refit_on}})


def test_refit_on_train_takes_the_best_parameters_and_nothing_else():
    winner = winner_config(config("train"), BEST, temperature=2.0)
    assert winner.training.unfrozen.learning_rate == 2e-4 and winner.training.unfrozen.epochs == 4
    assert winner.training.temperature is None and not winner.data.train_on_validation


def test_refit_on_train_and_validation_trains_on_both_with_the_trial_temperature():
    winner = winner_config(config("train+validation"), BEST, temperature=2.0)
    assert winner.data.train_on_validation and winner.training.temperature == 2.0
    assert winner.training.unfrozen.epochs == 4 and winner.training.unfrozen.learning_rate == 2e-4


def test_a_temperature_you_set_is_kept_when_no_trial_fitted_one():
    winner = winner_config(config("train+validation", temperature=1.5), BEST, temperature=None)
    assert winner.training.temperature == 1.5 and winner.data.train_on_validation


@pytest.mark.parametrize(
    ("task", "expected"), [("classification", "train+validation"), ("regression", "train"), ("multilabel", "train")]
)
def test_auto_refits_classification_on_every_row_and_other_tasks_on_train(task, expected):
    config = validate_config({"task": task, "data": DATA})  # refit_on: auto, the default
    assert config.search.refit_on == "auto" and refit_on(config) == expected
    assert winner_config(config, {}).data.train_on_validation == (expected == "train+validation")
