"""Backbone resolution as a task: the bundled model, a local path or a hub id."""

from __future__ import annotations

from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from finetune_core.backbone import resolve_backbone as resolve
from finetune_core.config import FinetuneConfig


@task(name="resolve-backbone", cache_policy=NO_CACHE)
def resolve_backbone(config: FinetuneConfig, run_id: str) -> str:
    """Resolve every candidate (a missing path fails here, naming it); train the first.

    Ranking several candidates by transferability is a later pipeline step; until then the
    first candidate is the one fine-tuned, and the log says so.
    """
    resolved = [resolve(spec) for spec in config.backbone.candidates]
    if len(resolved) > 1:
        get_run_logger().warning("%d candidates given; fine-tuning the first: %s", len(resolved), resolved[0])
    MlflowClient().set_tag(run_id, "backbone", resolved[0])
    return resolved[0]
