"""`finetune tune` as users run it: exit codes, resume after a real SIGKILL, a study shared by two
processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import sqlalchemy
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.flows.test_tune import SEARCH, sweep_config


def _write(raw: dict, tmp_path: Path) -> Path:
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _study(tmp_path: Path) -> optuna.Study:
    summaries = optuna.get_all_study_summaries(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(summaries) == 1, [s.study_name for s in summaries]
    return optuna.load_study(study_name=summaries[0].study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def _trial_runs(tracking_uri: str, study: optuna.Study) -> list:
    client = MlflowClient(tracking_uri)
    parent = study.user_attrs["mlflow_parent_run_id"]
    experiment = client.get_run(parent).info.experiment_id
    return client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{parent}' and tags.study = '{study.study_name}'"
    )


def _invoke(config: Path):
    """The `finetune` command in this process (under the session's Prefect server): no start-up."""
    from typer.testing import CliRunner

    from flows.cli import app

    return CliRunner().invoke(app, ["tune", str(config)])


def test_a_bad_space_is_exit_2_naming_the_key(prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path):
    unknown = {"training.unfrozen.learnig_rate": {"low": 1e-5, "high": 1e-4}}
    done = _invoke(_write(sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, space=unknown), tmp_path))
    assert done.exit_code == 2, done.output
    assert "search.space.training.unfrozen.learnig_rate" in done.output and "unknown" in done.output
    empty = {"training.unfrozen.epochs": {"low": 4, "high": 2}}
    done = _invoke(_write(sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, space=empty), tmp_path))
    assert done.exit_code == 2 and "search.space.training.unfrozen.epochs" in done.output, done.output
    assert "empty range" in done.output
    raw = sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path)
    raw["data"]["train_on_validation"] = True  # the trials' scores would be read on rows they trained on
    done = _invoke(_write(raw, tmp_path))
    assert done.exit_code == 2 and "search.refit_on: train+validation" in " ".join(done.output.split()), done.output


def test_every_trial_failing_is_exit_1_with_the_first_error(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path
):
    space = {"training.unfrozen.freeze_layers": {"choices": [5, 6]}}
    raw = sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, space=space, n_trials=2)
    done = _invoke(_write(raw, tmp_path))
    assert done.exit_code == 1, done.output[-3000:]
    output = " ".join(done.output.split())  # the console wraps long lines
    assert "no trial of study" in output and "the first error: trial 0" in output
    assert "outside the backbone's 2 transformer blocks" in output


def _tune(prefect_server: str, config: Path, *args: str, **env: str) -> subprocess.Popen:
    """`finetune tune CONFIG ARGS` started in the config's directory, with ``env`` added."""
    script = Path(sys.executable).with_name("finetune")
    environment = {**os.environ, "PREFECT_API_URL": prefect_server, **env}
    return subprocess.Popen(
        [str(script), "tune", str(config), *args],
        cwd=config.parent,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr[-3000:]


def test_a_killed_sweep_resumes_without_repeating_finished_trials(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path
):
    """SIGKILL in trial 2's first epoch: run again, trials 0 and 1 are not trained again, trial 2 is
    marked failed and retried with its parameters, and the study reaches its 4 trials."""
    config = _write(sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path), tmp_path)
    code, stderr = _finish(_tune(prefect_server, config, "--trials-only", FINETUNE_FAULT_KILL_AT="trial:2:epoch:1"))
    assert code == -signal.SIGKILL, stderr
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [*(t.state for t in study.trials[:2]), TrialState.RUNNING]
    assert all(t.state.is_finished() for t in study.trials[:2])
    interrupted = study.trials[2].params
    time.sleep(3 * SEARCH["heartbeat_seconds"])  # past the grace period: the dead trial's heartbeat is stale

    code, stderr = _finish(_tune(prefect_server, config, "--trials-only"))
    assert code == 0, stderr
    study = _study(tmp_path)
    states = [t.state for t in study.trials]
    assert states[2] == TrialState.FAIL and study.trials[3].params == interrupted, states
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 4
    runs = _trial_runs(tracking_uri, study)
    trained = sorted(int(r.data.tags["trial"]) for r in runs)
    assert trained == list(range(len(states))), trained  # one run per trial: none trained twice
    dead = next(r for r in runs if r.data.tags["trial"] == "2")
    assert dead.info.status == "FAILED" and dead.data.tags["state"] == "failed"


def test_two_processes_share_one_study(prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path):
    """A second worker joins while the first runs (its first trial finished): the first stops at its
    4 trials, the second takes the study to 8; trial numbers are the study's, none trained twice."""
    config = _write(sweep_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, n_trials=4), tmp_path)
    first = _tune(prefect_server, config, "--trials-only")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    deadline = time.monotonic() + 300
    while not _a_trial_finished(storage) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    second = _tune(prefect_server, config, "--trials-only", "--trials", "8")
    for worker in (first, second):
        code, stderr = _finish(worker)
        assert code == 0, stderr
    study = _study(tmp_path)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 8 <= len(finished) <= 9  # two workers may each ask the last trial at the same moment
    runs = _trial_runs(tracking_uri, study)
    assert sorted(int(r.data.tags["trial"]) for r in runs) == [t.number for t in study.trials]
    assert len({r.data.tags["worker"] for r in runs}) == 2  # both processes ran trials of the one study


def _a_trial_finished(storage: str) -> bool:
    try:
        summaries = optuna.get_all_study_summaries(storage=storage)
        study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    except (IndexError, KeyError, ValueError, RuntimeError, sqlalchemy.exc.SQLAlchemyError):
        return False  # not created yet
    return any(t.state.is_finished() for t in study.trials)
