"""Hyperparameter search as a Prefect flow; it reads as the DAG:

validate the space → open the study (Optuna RDB storage) → read, validate and prepare the data once
→ select the backbone → [stage 1 once, when the space varies only stage 2] → trials as task runs
(each a nested MLflow run, pruned by epoch on validation) → the best trial → the winner trained as a
`finetune` run (evaluated once on test, gated, registered) → the sweep named in the version.

Run again, it continues the same study: finished trials are not run again, a trial whose worker died
is marked failed and retried once (docs/how-to/tune.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger
from prefect.futures import as_completed
from pydantic import BaseModel

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.tracking import with_resolved_tracking
from finetune_core.errors import ConfigError
from finetune_core.metric_table import primary_metric
from finetune_core.redaction import redact_uri
from finetune_core.run_layout import RunLayout, inputs_digest
from finetune_core.search.refit import refit_on, winner_config
from finetune_core.search.space import distributions, given_point, resolve_space, study_name
from finetune_core.search.study import (
    REFIT_TEMPERATURE,
    ask,
    best_trial,
    counts,
    default_storage,
    fail_stale,
    open_study,
    start_from,
)
from finetune_core.search.trial import pruned_stage, shares_stage1, unset_values
from flows.finetune import FinetuneResult, finetune
from tasks.backbone import select_backbone, task_runner
from tasks.data import augment, prepare_data, read_data, validate_data
from tasks.mlflow_io.tracking import log_config, use_store
from tasks.mlflow_io.tracking_server import naming_tracking_outages, require_tracking_server
from tasks.train import choose_recipe, train_contrastive, train_frozen
from tasks.tune import TrialOutcome, TrialSpec, close_dead_trial_runs, describe_sweep_version, log_sweep, run_trial


class SweepFailed(RuntimeError):
    """No trial of the study completed; the message carries the first trial's error."""


class TuneResult(BaseModel):
    study: str
    storage: str  # redacted
    parent_run_id: str
    metric: str
    trials: dict[str, int]
    best_trial: int
    best_value: float
    best_params: dict
    best_temperature: float | None = None  # under refit_on train+validation: given to the winner
    space: list[str]
    winner: FinetuneResult | None = None  # None: trials only (another worker registers)


@flow(name="tune", log_prints=True)
def tune(
    config: FinetuneConfig,
    n_trials: int | None = None,
    max_minutes: float | None = None,
    trials_only: bool = False,
) -> TuneResult:
    """Search `config.search.space` with Optuna, trials as task runs; register the best configuration
    through the gates. ``trials_only``: add trials to the shared study and stop (another worker's sweep
    registers)."""
    config = with_resolved_tracking(config)
    require_tracking_server(config.mlflow.tracking_uri)
    if n_trials is not None or max_minutes is not None:
        given = {"n_trials": n_trials, "max_minutes": max_minutes}
        search = config.search.model_copy(update={k: v for k, v in given.items() if v is not None})
        config = config.model_copy(update={"search": search})
    if config.training.num_processes > 1 or config.training.launcher != "local":
        raise ConfigError("search: trials train in one process (training.num_processes 1, launcher local)")
    if config.data.train_on_validation:
        raise ConfigError(
            "data.train_on_validation: trials are scored on the validation split, so it cannot train in a sweep; "
            "leave it unset and set search.refit_on: train+validation to train the winner on it"
        )
    space = resolve_space(config)  # an unknown key or an empty range: named before anything starts
    data = config.data
    name = study_name(config, space, inputs_digest([data.train, data.validation, data.test]))
    return _sweep(config, name=name, storage=default_storage(config), trials_only=trials_only)


@naming_tracking_outages
def _sweep(config: FinetuneConfig, *, name: str, storage: str, trials_only: bool) -> TuneResult:
    use_store(config.mlflow.tracking_uri)
    mlflow.set_experiment(config.mlflow.experiment)
    logger = get_run_logger()
    study = open_study(config, name=name, storage_url=storage, task=config.task)
    parent = _parent_run(study, config, name)
    close_dead_trial_runs(study)
    logger.info("study %s in %s, sweep run %s: %s", name, redact_uri(storage), parent, counts(study))
    layout = RunLayout(Path(config.output_dir).resolve() / "sweeps" / name)
    try:
        raw = read_data(config, layout)
        validate_data(config, raw, layout, parent)
        prepared = augment(config, prepare_data(config, raw, layout, parent), parent)
        trained, recipe, prepared = choose_recipe(config, prepared, parent)
        if recipe.validation != "used":
            raise ConfigError(
                f"search: trials are scored on the validation split, which this recipe does not use "
                f"({recipe.validation}); give data.validation or more rows per class"
            )
        selection = select_backbone.with_options(task_runner=task_runner(config))(config, prepared, layout, parent)
        space = resolve_space(trained)  # strategy resolved: contrastive adds its learning rate
        if config.search.start_from_config:
            _start_from_config(study, trained, space, prepared, selection.selected.path)
        stage1 = _shared_stage1(trained, prepared, selection, layout, parent, space)
        base = TrialSpec.model_construct(
            config=trained,
            prepared=prepared,
            study=name,
            storage_url=storage,
            backbone=selection.selected.path,
            stage1=stage1,
            parent_run_id=parent,
        )
        outcomes = _run_trials(study, config, base, space, layout, wait=not trials_only)
        summary = _summary(study, config, name, parent, outcomes)
        log_sweep(parent, study, summary)
        result = TuneResult(storage=redact_uri(storage), space=[d.describe() for d in space.values()], **summary)
        if not trials_only:
            result.winner = _register_winner(config, result)
    except BaseException:
        MlflowClient().set_terminated(parent, "FAILED")
        raise
    MlflowClient().set_terminated(parent, "FINISHED")
    return result


def _parent_run(study, config: FinetuneConfig, name: str) -> str:
    """The sweep's MLflow run: the study remembers it, so a resumed sweep (or a second worker) logs
    to the same one."""
    from prefect.runtime import flow_run

    client = MlflowClient()
    known = study.user_attrs.get("mlflow_parent_run_id")
    if known:
        client.update_run(known, status="RUNNING")
        return known
    experiment = mlflow.get_experiment_by_name(config.mlflow.experiment).experiment_id
    tags = {"sweep_study": name, "sweep_role": "parent", "prefect.flow_run_id": str(flow_run.get_id())}
    run_id = client.create_run(experiment, run_name=f"sweep-{name}", tags=tags).info.run_id
    log_config(run_id, config)
    study.set_user_attr("mlflow_parent_run_id", run_id)
    return run_id


def _start_from_config(study, trained: FinetuneConfig, space, prepared, backbone: str) -> None:
    """A new study's first trial is the recipe as given: the winner then scores at least its validation
    score (docs/decisions/sweep-start-point.md: on MRPC a sweep of random points missed what it found)."""
    if study.get_trials(deepcopy=False):  # resumed, or another worker's: its first trial is asked
        return
    point = given_point(trained, space, unset=unset_values(trained, space, prepared, backbone))
    if start_from(study, point):
        get_run_logger().info("trial 0 is the configuration as given: %s", point)


def _shared_stage1(trained, prepared, selection, layout: RunLayout, parent: str, space) -> str | None:
    """Stage 1 once for every trial when the space varies only stage 2 (resumed when already done)."""
    if not (shares_stage1(space) and pruned_stage(trained) == "unfrozen"):
        return None
    backbone, known = selection.selected.path, selection.selected.features
    if trained.training.strategy == "contrastive":
        train_contrastive(trained, prepared, backbone, layout, parent, True)
        backbone, known = str(layout.contrastive), None
    train_frozen(trained, prepared, backbone, layout, parent, resume=True, known_features=known)
    return str(layout.frozen)


def _wanted(study, n_trials: int) -> bool:
    c = counts(study)
    return c["done"] + c["running"] < n_trials


def _run_trials(study, config: FinetuneConfig, base: TrialSpec, space, layout: RunLayout, wait: bool):
    """Ask, run and tell up to ``search.parallel`` trials at once on the configured task runner, until
    the study has ``n_trials`` done or the time budget is spent; ``wait``: then wait for other
    workers' running trials (a dead one's retry runs here)."""
    search = config.search
    deadline = time.monotonic() + search.max_minutes * 60 if search.max_minutes else None
    asking = distributions(space)
    workers = config.backbone.model_copy(update={"selection_workers": search.parallel})
    outcomes: list[TrialOutcome] = []
    in_flight = []
    with task_runner(config.model_copy(update={"backbone": workers})) as runner:
        while True:
            expired = deadline is not None and time.monotonic() >= deadline
            while len(in_flight) < search.parallel and not expired and _wanted(study, search.n_trials):
                trial = ask(study, asking)
                spec = base.model_copy(
                    update={
                        "trial_id": trial._trial_id,  # the storage's id: the task opens the same trial
                        "number": trial.number,
                        "params": trial.params,
                        "trial_dir": str(layout.root / "trials" / str(trial.number)),
                    }
                )
                in_flight.append(runner.submit(run_trial, {"spec": spec, "tracking_uri": config.mlflow.tracking_uri}))
            if in_flight:
                done = next(as_completed(in_flight))
                in_flight.remove(done)
                outcomes.append(done.result())
                continue
            c = counts(study)
            if (
                expired
                or not wait
                or (c["running"] == 0 and (c["waiting"] == 0 or not _wanted(study, search.n_trials)))
            ):
                return outcomes
            time.sleep(search.heartbeat_seconds)  # another worker's trial: finished, or stale and failed
            fail_stale(study)
            close_dead_trial_runs(study)


def _first_error(study, outcomes: list[TrialOutcome]) -> str:
    failed = sorted((t for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs), key=lambda t: t.number)
    if failed:
        return f"trial {failed[0].number}: {failed[0].user_attrs['error']}"
    errors = [o for o in outcomes if o.error]
    return f"trial {errors[0].number}: {errors[0].error}" if errors else "no trial ran"


def _summary(study, config, name: str, parent: str, outcomes) -> dict:
    c = counts(study)
    if c["complete"] == 0:
        raise SweepFailed(f"no trial of study {name} completed ({c}); the first error: {_first_error(study, outcomes)}")
    best = best_trial(study)
    metric, _ = primary_metric(config.task, config.training.metric)
    return dict(
        study=name,
        parent_run_id=parent,
        metric=metric,
        trials=c,
        best_trial=best.number,
        best_value=best.value,
        best_params=best.params,
        best_temperature=best.user_attrs.get(REFIT_TEMPERATURE),
    )


def _register_winner(config: FinetuneConfig, result: TuneResult) -> FinetuneResult:
    """The best parameters merged into the given configuration, trained as a `finetune` run: the
    same DAG as any candidate (evaluated once on test, gated, registered). Trained again rather than
    reusing the trial's weights: same configuration, data and seed give the same model, and the run
    then holds everything a run holds (calibration, review files, lineage), from any worker's trial.
    Under ``search.refit_on: train+validation`` the validation rows train too, and the winner is given the
    temperature its trial fitted on them (``winner_config``)."""
    merged = winner_config(config, result.best_params, temperature=result.best_temperature)
    tags = {
        "sweep_run_id": result.parent_run_id,
        "sweep_study": result.study,
        "sweep_best_trial": str(result.best_trial),
    }
    winner = finetune(merged, extra_tags=tags, run_key=result.study)
    summary = {**result.model_dump(), "refit_on": refit_on(config)}
    describe_sweep_version(winner.registered_model, winner.model_version, summary, result.space)
    client = MlflowClient()
    client.set_tag(result.parent_run_id, "winner_run_id", winner.mlflow_run_id)
    client.set_tag(result.parent_run_id, "winner_version", f"{winner.registered_model}/{winner.model_version}")
    return winner
