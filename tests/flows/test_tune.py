"""`finetune tune` on a tiny random model: trials as Prefect task runs nested in the sweep's MLflow run,
pruned by epoch, the winner registered through the gates; crashes, resume and a shared study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.run_layout import RunLayout
from finetune_core.serving.predictor import load_meta
from tests.conftest import tiny_config

# Validation loss is continuous (accuracy on 12 rows ties), so the median pruner has something to prune.
SEARCH = {
    "n_trials": 4,
    "startup_trials": 1,
    "pruner": "median",
    "default_space": False,
    "space": {"training.unfrozen.learning_rate": {"low": 1e-5, "high": 0.2, "log": True}},
    "heartbeat_seconds": 2,
}


def sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, **search) -> dict:
    return tiny_config(
        tiny_backbone,
        sst2_small,
        tracking_uri,
        tmp_path,
        training={"metric": "loss", "unfrozen": {"epochs": 2, "learning_rate": 1e-3}},
        search={**SEARCH, **search},
    )


def _children(client: MlflowClient, parent: str) -> list:
    experiment = client.get_run(parent).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")


def test_sweep_prunes_nests_and_registers_the_winner(prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path):
    from flows.tune import tune

    config = validate_config(sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path))
    result = tune(config)

    assert result.trials["done"] == 4 and result.trials["pruned"] >= 1, result.trials
    client = MlflowClient(tracking_uri)
    trials = [r for r in _children(client, result.parent_run_id) if "trial" in r.data.tags]
    assert sorted(int(r.data.tags["trial"]) for r in trials) == [0, 1, 2, 3]
    states = {r.data.tags["state"] for r in trials}
    assert "pruned" in states and "complete" in states
    for run in trials:
        assert "training.unfrozen.learning_rate" in run.data.params and "duration_seconds" in run.data.metrics
        assert client.get_metric_history(run.info.run_id, "unfrozen/val_loss")
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "sweep")}
    assert {"sweep/best.json", "sweep/history.png"} <= artifacts

    winner = result.winner
    assert winner is not None and winner.gate_passed
    version = client.get_model_version(winner.registered_model, winner.model_version)
    assert version.tags["sweep_run_id"] == result.parent_run_id
    assert f"Best trial {result.best_trial}" in version.description and result.study in version.description
    params = client.get_run(winner.mlflow_run_id).data.params
    assert float(params["training.unfrozen.learning_rate"]) == pytest.approx(
        result.best_params["training.unfrozen.learning_rate"]
    )
    study = optuna.load_study(study_name=result.study, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 4  # the winner was trained as a run, not as a fifth trial
    assert study.trials[0].params == {"training.unfrozen.learning_rate": 1e-3}  # the configuration as given
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(t.user_attrs["validation_loss"] > 0 for t in complete)  # what breaks a tie


def test_refit_on_train_keeps_the_validation_rows_out_of_the_winner(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path
):
    """The winner's run holds out the rows its trials were scored on, and fits its own temperature there."""
    from flows.tune import tune

    result = tune(
        validate_config(sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, n_trials=2, refit_on="train"))
    )
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.winner.mlflow_run_id).data
    assert run.params["data.train_on_validation"] == "False" and run.metrics["data/rows_train"] == 108
    assert result.best_temperature is None  # no trial fitted one: the winner has its validation rows
    assert "temperature_given" not in result.winner.calibration and result.winner.calibration["temperature"] > 0
    version = client.get_model_version(result.winner.registered_model, result.winner.model_version)
    assert version.description.endswith("Winner trained on: train")  # no temperature given


def test_a_crashing_trial_is_recorded_failed_and_the_sweep_goes_on(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path
):
    """freeze_layers 5 on a 2-block backbone fails inside the trial; the other value trains."""
    from flows.tune import tune

    space = {"training.unfrozen.freeze_layers": {"choices": [5, 0]}}
    raw = sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, space=space, sampler="random", n_trials=4)
    result = tune(validate_config(raw), trials_only=True)

    assert result.trials["fail"] >= 1 and result.trials["complete"] >= 1 and result.trials["done"] == 4
    assert result.best_params == {"training.unfrozen.freeze_layers": 0} and result.winner is None
    client = MlflowClient(tracking_uri)
    failed = [r for r in _children(client, result.parent_run_id) if r.data.tags.get("state") == "failed"]
    assert failed and all(r.info.status == "FAILED" for r in failed)
    assert "outside the backbone's 2 transformer blocks" in failed[0].data.tags["error"]


def test_a_classification_winner_trains_on_train_and_validation_by_default(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path
):
    """`refit_on: auto`: the trials score on the 12 held-out rows; the winner, chosen, trains on all 120, and
    is given the temperature its trial fitted on those 12 (it has none left to fit one on)."""
    from flows.tune import tune

    raw = sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, n_trials=2)
    result = tune(validate_config(raw))

    client = MlflowClient(tracking_uri)
    run = client.get_run(result.winner.mlflow_run_id).data
    assert run.params["data.train_on_validation"] == "True" and run.metrics["data/rows_train"] == 120
    assert "train_on_validation" in run.params["training.validation_use"]
    assert client.get_run(result.parent_run_id).data.metrics["data/rows_train"] == 108  # the trials': train only
    inputs = {i.dataset.name: i for i in client.get_run(result.winner.mlflow_run_id).inputs.dataset_inputs}
    assert {t.key: t.value for t in inputs["validation"].tags}["mlflow.data.context"] == "training"  # they trained
    version = client.get_model_version(result.winner.registered_model, result.winner.model_version)
    assert "Winner trained on: train+validation" in version.description

    temperature = result.best_temperature
    assert temperature is not None and temperature > 0 and temperature != 1.0
    best = optuna.load_study(study_name=result.study, storage=f"sqlite:///{tmp_path / 'optuna.db'}").best_trial
    assert best.user_attrs["refit_temperature"] == temperature
    assert float(run.params["training.temperature"]) == pytest.approx(temperature)
    assert run.metrics["calibration/temperature"] == pytest.approx(temperature)
    assert run.metrics["calibration/temperature_given"] == 1.0
    assert load_meta(RunLayout(Path(result.winner.run_dir)).model).temperature == pytest.approx(temperature)
    assert f"temperature {temperature:.3f} given, fitted by trial {result.best_trial}" in version.description
