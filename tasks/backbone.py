"""Backbone selection as a subflow: candidates scored in parallel as mapped tasks, ranked, logged."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.prepare import PreparedData
from finetune_core.errors import ConfigError
from finetune_core.faults import maybe_kill
from finetune_core.model.backbone import backbone_identity, resolve_backbone
from finetune_core.run_layout import RunLayout
from finetune_core.selection.candidates import (
    CandidateScore,
    SelectionResult,
    choose,
    score_candidate,
    selection_sample,
)
from finetune_core.training.device import Runtime, runtime_for
from tasks.mlflow_io.tracking import log_json


def task_runner(config: FinetuneConfig):
    """The runner that scores candidates: a thread pool, or Dask/Ray when their Prefect
    integrations are installed."""
    workers = config.backbone.selection_workers
    if config.backbone.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError("backbone.task_runner: dask needs `pip install prefect-dask`") from None
        if config.backbone.dask_address:
            return DaskTaskRunner(address=config.backbone.dask_address)
        # A local cluster of worker processes, one thread each: torch parallelises inside a task.
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        )
    if config.backbone.task_runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise ConfigError("backbone.task_runner: ray needs `pip install prefect-ray`") from None
        return RayTaskRunner()
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=workers)


@task(name="score-backbone", cache_policy=NO_CACHE, task_run_name="score-{candidate}")
def score_backbone(
    config: FinetuneConfig, prepared: PreparedData, candidate: str, sample: np.ndarray, out_dir: Path, runtime: Runtime
) -> CandidateScore:
    """Frozen features of one candidate on the sample: LogME (or probe) score, size, latency.
    An error names the candidate (``score_candidate``)."""
    score = score_candidate(config, prepared, candidate, sample, Path(out_dir), runtime)
    maybe_kill("selection")  # a candidate's features saved, the ranking not yet made
    return score


def tag_backbone(run_id: str, candidate: str, path: str) -> None:
    """The run's backbone tags: what the configuration asked for (and its hub revision) and a
    hash of its weights, which mean the same on any machine; the resolved path as a detail."""
    client = MlflowClient()
    for key, value in backbone_identity(candidate, path).tags().items():
        client.set_tag(run_id, key, value)


def _log_candidates(result: SelectionResult, run_id: str) -> None:
    """One nested MLflow run per candidate, under the flow's run."""
    client = MlflowClient()
    experiment = client.get_run(run_id).info.experiment_id
    for row, score in zip(result.table(), result.ranking):
        child = client.create_run(
            experiment,
            run_name=f"backbone-{row['rank']}",
            tags={
                "mlflow.parentRunId": run_id,
                "candidate": score.candidate,
                "selected": str(row["selected"]).lower(),
                "excluded": score.excluded or "",
            },
        )
        child_id = child.info.run_id
        client.log_param(child_id, "candidate", score.candidate[:500])
        client.log_param(child_id, "metric", score.metric)
        for key in ("score", "parameters", "latency_ms", "seconds"):
            value = getattr(score, key)
            if value is not None:
                client.log_metric(child_id, key, float(value))
        client.set_terminated(child_id)


@flow(name="select-backbone")
def select_backbone(config: FinetuneConfig, prepared: PreparedData, layout: RunLayout, run_id: str) -> SelectionResult:
    """Rank `backbone.candidates` by transferability from frozen features; one candidate skips it."""
    paths = [resolve_backbone(c) for c in config.backbone.candidates]  # a missing path fails here, named
    if len(paths) == 1:
        only = CandidateScore(candidate=config.backbone.candidates[0], path=paths[0], metric="none")
        tag_backbone(run_id, config.backbone.candidates[0], paths[0])
        return SelectionResult(selected=only, ranking=[only], seconds=0.0)
    started = time.perf_counter()
    sample = selection_sample(prepared, config.backbone.selection_sample, config.training.seed)
    # Resolved here, once, not by each mapped task: the workers then share one device and precision.
    runtime = runtime_for(config.training)
    futures = score_backbone.map(
        unmapped(config),
        unmapped(prepared),
        config.backbone.candidates,
        unmapped(sample),
        unmapped(layout.selection),
        unmapped(runtime),
    )
    result = choose([f.result() for f in futures], config, time.perf_counter() - started)
    table = result.table()
    create_table_artifact(
        table=table,
        key="backbone-ranking",
        description=f"{result.selected.metric} on {len(sample)} train rows; best first",
    )
    log_json(
        run_id, {"seconds": result.seconds, "sample_rows": len(sample), "ranking": table}, "selection/ranking.json"
    )
    _log_candidates(result, run_id)
    client = MlflowClient()
    tag_backbone(run_id, result.selected.candidate, result.selected.path)
    client.log_metric(run_id, "selection/seconds", result.seconds)
    get_run_logger().info(
        "selected %s (%s %.4f) among %d candidates in %.1f s",
        result.selected.candidate,
        result.selected.metric,
        result.selected.score,
        len(paths),
        result.seconds,
    )
    return result


def selection_reason(result: SelectionResult) -> str:
    """Why this backbone, in words, for the registered version's description."""
    if len(result.ranking) == 1:
        return "the only candidate"
    best = result.selected
    return (
        f"best {best.metric} {best.score:.4f} of {len(result.ranking)} candidates; "
        "ranking in the run's `selection/ranking.json`"
    )
