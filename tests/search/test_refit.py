"""The winner's configuration under each `search.refit_on` (finetune_core.search.refit), without Prefect or MLflow."""

from __future__ import annotations

import pytest

from finetune_core.config.loading import validate_config
from finetune_core.errors import ConfigError
from finetune_core.search.refit import winner_config

DATA = {"train": "train.csv", "test": "test.csv"}
BEST = {"training.unfrozen.learning_rate": 2e-4, "training.unfrozen.epochs": 4}


def config(refit_on: str, **training):
    return validate_config({"data": DATA, "training": training, "search": {"refit_on": refit_on}})


def test_refit_on_train_takes_the_best_parameters_and_nothing_else():
    winner = winner_config(config("train"), BEST, temperature=2.0, scored_epoch=2)
    assert winner.training.unfrozen.learning_rate == 2e-4 and winner.training.unfrozen.epochs == 4
    assert winner.training.unfrozen.stop_after_epoch is None and winner.training.temperature is None
    assert not winner.data.train_on_validation


def test_refit_on_train_and_validation_stops_at_the_scored_epoch_with_the_trial_temperature():
    winner = winner_config(config("train+validation"), BEST, temperature=2.0, scored_epoch=2)
    assert winner.data.train_on_validation and winner.training.temperature == 2.0
    assert winner.training.unfrozen.epochs == 4 and winner.training.unfrozen.stop_after_epoch == 2
    assert winner.training.frozen.stop_after_epoch is None


@pytest.mark.parametrize("scored_epoch", [4, 0, None])
def test_a_trial_scored_at_its_last_epoch_or_at_none_trains_every_epoch(scored_epoch):
    winner = winner_config(config("train+validation"), BEST, scored_epoch=scored_epoch)
    assert winner.training.unfrozen.stop_after_epoch is None and winner.data.train_on_validation


def test_a_linear_probe_stops_its_head_stage():
    probe = config("train+validation", strategy="linear-probe", frozen={"epochs": 20})
    winner = winner_config(probe, {}, scored_epoch=7)
    assert winner.training.frozen.stop_after_epoch == 7 and winner.training.unfrozen.stop_after_epoch is None


def test_stopping_past_the_stage_epochs_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="stop_after_epoch 5 is past the stage's 3 epochs"):
        validate_config({"data": DATA, "training": {"unfrozen": {"epochs": 3, "stop_after_epoch": 5}}})
