"""The study in Optuna's RDB storage: where it lives, how it is opened (again), which trials count as
done, and the heartbeat that tells an interrupted trial from a running one (docs/how-to/tune.md)."""

from __future__ import annotations

import math
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.metric_table import primary_metric

TIE_BREAK = "validation_loss"  # a complete trial's user attribute: its loss at the epoch it is scored on
REFIT_TEMPERATURE = "refit_temperature"  # under refit_on train+validation: the winner's temperature (trial.py)
OPTUNA_SCHEMA = "optuna"  # in a shared PostgreSQL: apart from MLflow's tables (both use alembic_version)


def default_storage(config: FinetuneConfig) -> str:
    """``search.storage``, else the tracking store's PostgreSQL, else SQLite beside the MLflow SQLite
    store (or in ``output_dir`` for a tracking server)."""
    if config.search.storage:
        return config.search.storage
    tracking = config.mlflow.tracking_uri or ""
    if tracking.startswith(("postgresql", "postgres")):
        return tracking
    if tracking.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking[len('sqlite:///') :]).resolve().with_name('optuna.db')}"
    return f"sqlite:///{Path(config.output_dir).resolve() / 'optuna.db'}"


def _storage(url: str, heartbeat_seconds: int):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs = {}
    if url.startswith(("postgresql", "postgres")):
        import sqlalchemy

        with sqlalchemy.create_engine(url).begin() as connection:
            connection.execute(sqlalchemy.text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
        engine_kwargs = {"connect_args": {"options": f"-csearch_path={OPTUNA_SCHEMA}"}}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log line per trial says more
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.9
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_seconds,
            grace_period=2 * heartbeat_seconds,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def _sampler(config: FinetuneConfig, asked_before: int):
    import optuna

    # offset by the trials already asked: a resumed sweep (or a second worker) asks new points
    seed = config.search.seed + asked_before
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.search.startup_trials)


def _pruner(config: FinetuneConfig):
    import optuna

    search = config.search
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials, n_warmup_steps=0)
    if search.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    return optuna.pruners.NopPruner()


def direction(config: FinetuneConfig, task: str) -> str:
    _, larger = primary_metric(task, config.training.metric)
    return "maximize" if larger else "minimize"


def open_study(config: FinetuneConfig, *, name: str, storage_url: str, task: str):
    """Create the study, or load it when it exists; trials of a dead worker are failed here (and
    retried once: ``RetryHeartbeatStaleTrialCallback``)."""
    import optuna

    storage = _storage(storage_url, config.search.heartbeat_seconds)
    study = optuna.create_study(
        study_name=name, storage=storage, direction=direction(config, task), load_if_exists=True
    )
    fail_stale(study)
    asked = len(study.get_trials(deepcopy=False))
    return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(config, asked), pruner=_pruner(config))


def start_from(study, point: dict) -> bool:
    """Queue ``point`` as a new study's first trial (the configuration as given); a study that has
    trials (resumed, or another worker's) is left as it is. True when queued."""
    if not point or study.get_trials(deepcopy=False):
        return False
    study.enqueue_trial(point, skip_if_exists=True)  # two workers opening one new study: queued once
    return True


def best_trial(study):
    """The best complete trial; among trials tied on the objective (accuracy on a few hundred rows ties
    often), the one with the lowest validation loss at its scored epoch, then the earliest."""
    from optuna.trial import TrialState

    best = study.best_trial
    tied = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value == best.value]
    return min(tied, key=lambda t: (t.user_attrs.get(TIE_BREAK, math.inf), t.number))


def fail_stale(study) -> None:
    """Mark trials whose worker stopped beating failed (each is retried once with its parameters)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def load_trial(config: FinetuneConfig, *, name: str, storage_url: str, trial_id: int):
    """The study and one asked trial, opened again where the trial runs (a thread, a Dask or Ray worker)."""
    import optuna

    storage = _storage(storage_url, config.search.heartbeat_seconds)
    study = optuna.load_study(study_name=name, storage=storage, pruner=_pruner(config))
    return study, optuna.trial.Trial(study, trial_id)


def ask(study, distributions: dict):
    """The next trial: a retry waiting in the study first, else a new point from the sampler."""
    with warnings.catch_warnings():
        # heartbeats outside Study.optimize are ours to record (``heartbeat`` below): that is the point
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        return study.ask(distributions)


def retried_ids(study) -> set[int]:
    """Failed trials that were given a retry (their parameters enqueued again)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {
            original
            for t in study.get_trials(deepcopy=False)
            if (original := RetryHeartbeatStaleTrialCallback.retried_trial_number(t)) is not None
        }


def counts(study) -> dict[str, int]:
    """Trials by state; ``done`` counts toward ``n_trials`` (a failed trial that was retried does not)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    by_state = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    retried = retried_ids(study)
    finished = [t for t in trials if t.state.is_finished() and t.number not in retried]
    return {**by_state, "done": len(finished)}


@contextmanager
def heartbeat(study, trial_id: int, seconds: int):
    """Record the trial's heartbeat every ``seconds`` while the block runs."""
    storage = study._storage  # the heartbeat API lives on the storage Optuna gives the study
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(seconds):
                return

    thread = threading.Thread(target=beat, name=f"trial-{trial_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
