"""The sweep's tasks: one Optuna trial as a Prefect task run (a nested MLflow run of the sweep's), and
the sweep's plots and the winner's description. The search logic is in finetune_core.search."""

from __future__ import annotations

import os
import shutil
import socket
import time
import warnings
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.prepare import PreparedData
from finetune_core.metric_table import primary_metric
from finetune_core.run_layout import RunLayout
from finetune_core.search.pruning import LOSS_METRIC, PruningCallback, chain, pruning_signal
from finetune_core.search.space import with_overrides
from finetune_core.search.study import REFIT_TEMPERATURE, TIE_BREAK, heartbeat, load_trial
from finetune_core.search.trial import pruned_stage, refit_temperature, scored_epoch_loss, stage_epochs, train_trial
from tasks.mlflow_io.tracking import epoch_logger, log_metrics, shorten, use_store


class TrialSpec(BaseModel):
    """What a trial needs, as references: the study, the trial, the data and the directories."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: FinetuneConfig  # the configuration the stages run (recipe resolved), before the trial's values
    prepared: PreparedData
    study: str
    storage_url: str
    trial_id: int
    number: int
    params: dict
    backbone: str
    stage1: str | None  # the sweep's shared stage-1 model, or None: trained in the trial
    trial_dir: str
    parent_run_id: str


class TrialOutcome(BaseModel):
    number: int
    state: str  # complete, pruned or failed
    value: float | None = None
    error: str | None = None
    seconds: float = 0.0
    mlflow_run_id: str


def _child_run(spec: TrialSpec) -> str:
    client = MlflowClient()
    experiment = client.get_run(spec.parent_run_id).info.experiment_id
    child = client.create_run(
        experiment,
        run_name=f"trial-{spec.number}",
        tags={
            "mlflow.parentRunId": spec.parent_run_id,
            "trial": str(spec.number),
            "study": spec.study,
            "worker": f"{socket.gethostname()}:{os.getpid()}",  # which process of a shared study ran it
        },
    )
    params = [Param(key, shorten(str(value))) for key, value in spec.params.items()]
    client.log_batch(child.info.run_id, params=params)
    return child.info.run_id


def _finish(spec: TrialSpec, run_id: str, outcome: TrialOutcome) -> TrialOutcome:
    client = MlflowClient()
    client.set_tag(run_id, "state", outcome.state)
    if outcome.error:
        client.set_tag(run_id, "error", shorten(outcome.error, 5000))
    metrics = {"duration_seconds": outcome.seconds}
    if outcome.value is not None:
        metrics["objective"] = outcome.value
    log_metrics(run_id, metrics)
    client.set_terminated(run_id, "FAILED" if outcome.state == "failed" else "FINISHED")
    shutil.rmtree(spec.trial_dir, ignore_errors=True)  # the winner is trained again as a run: no weights kept
    return outcome


@task(name="trial", cache_policy=NO_CACHE, task_run_name="trial-{spec.number}")
def run_trial(spec: TrialSpec, tracking_uri: str) -> TrialOutcome:
    """Train one trial's configuration, report each epoch's validation metric to the pruner, tell the
    study its outcome. A crash is the trial's failure, recorded: the sweep goes on."""
    from optuna.trial import TrialState

    use_store(tracking_uri)  # a Dask or Ray worker starts without the flow's store
    logger, started = get_run_logger(), time.perf_counter()
    study, trial = load_trial(spec.config, name=spec.study, storage_url=spec.storage_url, trial_id=spec.trial_id)
    run_id = _child_run(spec)
    trial.set_user_attr("mlflow_run_id", run_id)
    with heartbeat(study, spec.trial_id, spec.config.search.heartbeat_seconds):
        try:
            config = with_overrides(spec.config, spec.params)
            metric, _ = primary_metric(spec.prepared.task, config.training.metric)
            signal, sign = pruning_signal(config, spec.prepared.task)
            stage = pruned_stage(config)
            pruner = PruningCallback(trial, stage, signal, last_epoch=stage_epochs(config, stage), sign=sign)
            layout = RunLayout(Path(spec.trial_dir))
            result = train_trial(
                config,
                spec.prepared,
                backbone=spec.backbone,
                layout=layout,
                stage1=Path(spec.stage1) if spec.stage1 else None,
                on_epoch_end=chain(epoch_logger(run_id), pruner),
            )
            temperature = None if pruner.pruned_at is not None else refit_temperature(config, spec.prepared, layout)
        except Exception as exc:  # the trial's failure, not the sweep's
            error = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", error[:2000])
            study.tell(trial, state=TrialState.FAIL)
            logger.warning("trial %d failed: %s", spec.number, error)
            outcome = TrialOutcome(number=spec.number, state="failed", error=error, mlflow_run_id=run_id)
            return _finish(spec, run_id, outcome.model_copy(update={"seconds": time.perf_counter() - started}))
        if pruner.pruned_at is not None:
            study.tell(trial, state=TrialState.PRUNED)
            state, value = "pruned", result.best_metric
        else:
            loss = scored_epoch_loss(result, LOSS_METRIC[spec.prepared.task])
            if loss is not None:
                trial.set_user_attr(TIE_BREAK, loss)
            if temperature is not None:
                trial.set_user_attr(REFIT_TEMPERATURE, temperature)
            study.tell(trial, result.best_metric)
            state, value = "complete", result.best_metric
    seconds = time.perf_counter() - started
    logger.info("trial %d %s: validation %s %.4f, %.1f s, %s", spec.number, state, metric, value, seconds, spec.params)
    outcome = TrialOutcome(number=spec.number, state=state, value=value, seconds=seconds, mlflow_run_id=run_id)
    return _finish(spec, run_id, outcome)


def close_dead_trial_runs(study) -> None:
    """Trials failed because their worker died left their MLflow run RUNNING: mark it failed too."""
    from optuna.trial import TrialState

    client = MlflowClient()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id and client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "state", "failed")
            client.set_tag(run_id, "error", "its worker stopped (no heartbeat); retried once as a new trial")
            client.set_terminated(run_id, "FAILED")


@task(name="log-sweep", cache_policy=NO_CACHE)
def log_sweep(parent_run_id: str, study, summary: dict) -> None:
    """On the sweep's run: the best parameters, counts by state, the optimisation history and the
    parameters' importance (when enough trials completed to estimate it)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a worker
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    client = MlflowClient()
    client.log_dict(parent_run_id, summary, "sweep/best.json")
    log_metrics(parent_run_id, {f"trials_{k}": v for k, v in summary["trials"].items()})
    if summary.get("best_value") is not None:
        log_metrics(parent_run_id, {"best_objective": summary["best_value"]})
        # tags, not params: a resumed sweep or another worker may find a better trial later
        tags = [RunTag(f"best.{k}", shorten(str(v))) for k, v in summary["best_params"].items()]
        client.log_batch(parent_run_id, tags=[*tags, RunTag("best_trial", str(summary["best_trial"]))])
    logger = get_run_logger()
    for name, draw in (("history", plots.plot_optimization_history), ("importance", plots.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental, every call
                axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too few completed trials to tell
            logger.info("no %s plot: %s", name, exc)
            continue
        client.log_figure(parent_run_id, axes.figure, f"sweep/{name}.png")
        plt.close(axes.figure)


@task(name="describe-sweep-version", cache_policy=NO_CACHE)
def describe_sweep_version(name: str, version: str, summary: dict, space: list[str]) -> None:
    """The registered version's description names the sweep: study, trials, the best trial, the space."""
    client = MlflowClient()
    current = client.get_model_version(name, version).description or ""
    best = summary["best_params"]
    lines = [
        "",
        "## Hyperparameter search",
        f"Study `{summary['study']}` (sweep run `{summary['parent_run_id']}`): "
        + ", ".join(f"{n} {k}" for k, n in summary["trials"].items() if n and k != "done"),
        f"Best trial {summary['best_trial']}: validation {summary['metric']} {summary['best_value']:.4f} with "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items()),
        "Space: " + "; ".join(space),
        f"Winner trained on: {summary['refit_on']}" + _given_temperature(summary),
    ]
    client.update_model_version(name, version, description=current + "\n".join(lines))


def _given_temperature(summary: dict) -> str:
    if summary.get("best_temperature") is None:
        return ""
    return (
        f"; temperature {summary['best_temperature']:.3f} given, fitted by trial {summary['best_trial']} "
        "on the validation rows it was scored on"
    )
