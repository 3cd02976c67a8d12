"""The search space, a trial's overrides and the pruning hook, without Prefect or MLflow."""

from __future__ import annotations

import optuna
import pytest

from finetune_core.config.loading import validate_config
from finetune_core.errors import ConfigError
from finetune_core.search.pruning import PruningCallback, chain, pruning_signal
from finetune_core.search.space import DEFAULT_SPACE, distributions, resolve_space, study_name, with_overrides
from finetune_core.search.study import ask, counts, default_storage
from finetune_core.training.loop import EpochLoop

DATA = {"train": "train.csv", "test": "test.csv"}


def config(**search):
    return validate_config({"data": DATA, "search": search})


def test_the_default_space_is_every_default_key():
    space = resolve_space(config())
    assert set(space) == set(DEFAULT_SPACE)
    assert space["training.unfrozen.epochs"].kind == "int"
    assert space["training.unfrozen.learning_rate"].distribution().log


def test_a_key_overrides_its_default_and_null_drops_one():
    space = resolve_space(
        config(
            space={"training.unfrozen.learning_rate": {"low": 1e-5, "high": 1e-4}, "training.unfrozen.dropout": None}
        )
    )
    assert "training.unfrozen.dropout" not in space
    assert space["training.unfrozen.learning_rate"].bounds.high == 1e-4


def test_the_contrastive_rate_joins_under_strategy_contrastive():
    contrastive = validate_config({"data": DATA, "training": {"strategy": "contrastive"}})
    assert "training.contrastive.learning_rate" in resolve_space(contrastive)


@pytest.mark.parametrize(
    ("space", "named"),
    [
        (
            {"training.unfrozen.learnin_rate": {"low": 1e-5, "high": 1e-4}},
            "search.space.training.unfrozen.learnin_rate",
        ),
        ({"training.nope.epochs": {"low": 1, "high": 2}}, "search.space.training.nope.epochs"),
        ({"training.unfrozen": {"low": 1, "high": 2}}, "search.space.training.unfrozen"),
        (
            {"training.unfrozen.learning_rate": {"low": 1e-5, "high": 2.0}},
            "search.space.training.unfrozen.learning_rate",
        ),
        ({"training.unfrozen.epochs": {"low": 1.5, "high": 3}}, "search.space.training.unfrozen.epochs"),
        ({"training.unfrozen.scheduler": {"low": 1, "high": 3}}, "search.space.training.unfrozen.scheduler"),
    ],
)
def test_a_bad_key_or_value_is_a_config_error_naming_the_key(space, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        resolve_space(config(space=space))


@pytest.mark.parametrize(
    "bounds", [{"low": 3, "high": 2}, {"low": 0.0, "high": 1e-3, "log": True}, {"low": 1}, {"choices": []}]
)
def test_an_empty_range_is_refused_when_loaded_naming_the_key(bounds):
    with pytest.raises(ConfigError, match=r"search\.space\.training\.unfrozen\.epochs"):
        config(space={"training.unfrozen.epochs": bounds})


def test_choices_for_a_categorical_key():
    space = resolve_space(
        config(default_space=False, space={"training.unfrozen.scheduler": {"choices": ["linear", "cosine"]}})
    )
    assert space["training.unfrozen.scheduler"].kind == "categorical"


def test_a_trials_values_merge_into_the_configuration():
    merged = with_overrides(config(), {"training.unfrozen.learning_rate": 3e-5, "training.unfrozen.epochs": 4})
    assert merged.training.unfrozen.learning_rate == 3e-5 and merged.training.unfrozen.epochs == 4
    with pytest.raises(ConfigError, match="training.unfrozen.epochs"):
        with_overrides(config(), {"training.unfrozen.epochs": -1})


def test_the_study_is_named_by_configuration_inputs_and_space_not_by_the_budget():
    base = config()
    name = study_name(base, resolve_space(base), "inputs")
    assert study_name(config(n_trials=3, max_minutes=5), resolve_space(base), "inputs") == name
    assert study_name(base, resolve_space(base), "other inputs") != name
    narrower = config(space={"training.unfrozen.epochs": {"low": 2, "high": 3}})
    assert study_name(narrower, resolve_space(narrower), "inputs") != name
    assert base.fingerprint() == config(n_trials=3).fingerprint()  # the search section trains nothing


def test_the_study_lives_beside_the_mlflow_store_or_in_its_postgresql(tmp_path):
    sqlite = validate_config({"data": DATA, "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}})
    assert default_storage(sqlite) == f"sqlite:///{tmp_path}/optuna.db"
    postgres = validate_config({"data": DATA, "mlflow": {"tracking_uri": "postgresql://u:p@db/mlflow"}})
    assert default_storage(postgres) == "postgresql://u:p@db/mlflow"
    server = validate_config(
        {"data": DATA, "mlflow": {"tracking_uri": "http://mlflow:5000"}, "output_dir": str(tmp_path)}
    )
    assert default_storage(server) == f"sqlite:///{tmp_path}/optuna.db"


def test_the_pruning_callback_stops_the_epoch_loop_cleanly():
    """The second trial trails the first at epoch 1: the median pruner stops its loop after that
    epoch, and the loop ends with the best weights and says why."""
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask(distributions(resolve_space(config())))
    for epoch in (1, 2, 3):
        first.report(0.1, epoch)
    study.tell(first, 0.1)

    trial = study.ask()
    pruner = PruningCallback(trial, "unfrozen", "loss")
    seen = []
    state = _State()
    loop = EpochLoop(
        stage="unfrozen",
        epochs=3,
        train_examples=4,
        metric="val_loss",
        larger_is_better=False,
        on_epoch_end=chain(lambda stage, epoch, metrics: seen.append(epoch), pruner),
    )
    result = loop.run(state, train_epoch=lambda epoch: 1.0, validate=lambda: {"loss": 0.9})
    assert pruner.pruned_at == 1 and seen == [1] and result.epochs_run == 1
    assert result.extra["stopped_by"] == "pruned at epoch 1"
    assert trial.should_prune()


def test_the_pruner_is_not_asked_at_the_stages_last_epoch():
    """Stopping at the last epoch saves nothing and would put a finished trial's score out of the race:
    a trial the median pruner would stop there completes."""
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask(distributions(resolve_space(config())))
    first.report(0.1, 1)
    study.tell(first, 0.1)

    trial = study.ask()
    pruner = PruningCallback(trial, "unfrozen", "loss", last_epoch=1)
    loop = EpochLoop(
        stage="unfrozen", epochs=1, train_examples=4, metric="val_loss", larger_is_better=False, on_epoch_end=pruner
    )
    result = loop.run(_State(), train_epoch=lambda epoch: 1.0, validate=lambda: {"loss": 0.9})
    assert pruner.pruned_at is None and result.epochs_run == 1 and "stopped_by" not in result.extra
    assert trial.should_prune()  # what the pruner would have said, had it been asked


def test_done_trials_leave_out_a_failed_one_that_was_retried(tmp_path):
    from finetune_core.search.study import open_study

    search_config = validate_config({"data": DATA, "search": {"heartbeat_seconds": 1}})
    study = open_study(search_config, name="s", storage_url=f"sqlite:///{tmp_path}/o.db", task="classification")
    finished = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(finished, 0.5)
    dead = ask(study, {"x": optuna.distributions.FloatDistribution(0, 1)})
    study._storage.record_heartbeat(dead._trial_id)
    import time

    time.sleep(2.5)  # twice the heartbeat: its worker is gone
    again = open_study(search_config, name="s", storage_url=f"sqlite:///{tmp_path}/o.db", task="classification")
    c = counts(again)
    assert (c["complete"], c["fail"], c["waiting"], c["done"]) == (1, 1, 1, 1)
    retry = ask(again, {})
    assert retry.params == dead.params


class _State:
    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize(
    ("prune_on", "task", "metric", "heard"),
    [
        ("metric", "classification", None, ("accuracy", 1.0)),
        ("loss", "classification", None, ("loss", -1.0)),  # a maximised study hears the loss negated
        ("loss", "classification", "loss", ("loss", 1.0)),  # a study minimising the loss hears it as it is
        ("loss", "regression", None, ("mse", -1.0)),
        ("loss", "multilabel", None, ("loss", -1.0)),
    ],
)
def test_the_pruner_hears_the_loss_signed_to_the_studys_direction(prune_on, task, metric, heard):
    training = {"metric": metric} if metric else {}
    search_config = validate_config({"data": DATA, "training": training, "search": {"prune_on": prune_on}})
    assert pruning_signal(search_config, task) == heard


def test_a_trial_pruned_on_the_loss_is_stopped_by_its_loss_not_its_accuracy():
    """Prune on the loss: a trial as accurate as the one before it, with a far higher loss, is stopped."""
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    first.report(-0.3, 1)  # what the callback reports for a validation loss of 0.3
    study.tell(first, 0.85)

    trial = study.ask()
    pruner = PruningCallback(trial, "unfrozen", "loss", last_epoch=3, sign=-1.0)
    loop = EpochLoop(
        stage="unfrozen", epochs=3, train_examples=4, metric="val_accuracy", larger_is_better=True, on_epoch_end=pruner
    )
    loop.run(_State(), train_epoch=lambda epoch: 1.0, validate=lambda: {"accuracy": 0.85, "loss": 0.6})
    assert pruner.pruned_at == 1 and trial.should_prune()
    assert study.trials[1].intermediate_values == {1: -0.6}
