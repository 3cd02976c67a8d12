"""Retraining's own steps (Prefect tasks): the champion's recorded configuration and data
profile, and drift of a snapshot against it (the logic is in finetune_core.data.drift)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import yaml
from mlflow import MlflowClient
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.columns import text_columns
from finetune_core.data.drift import DataProfile, DriftReport, compare, profile_parquet
from finetune_core.data.prepare import require_columns
from finetune_core.data.readers import read_to_parquet
from tasks.data import PROFILE_ARTIFACT
from tasks.mlflow_io.registry_lookups import CHAMPION, alias_version


@task(name="champion-config", cache_policy=NO_CACHE)
def champion_records(config: FinetuneConfig) -> tuple[dict | None, DataProfile | None, str | None]:
    """The champion's recorded configuration and training-data profile (None without a champion)."""
    client = MlflowClient()
    current = alias_version(client, config.mlflow.registered_model, CHAMPION)
    if current is None:
        return None, None, None
    run = current.run_id
    recorded = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run}/config.yaml"))
    try:
        reference = DataProfile.model_validate_json(mlflow.artifacts.load_text(f"runs:/{run}/{PROFILE_ARTIFACT}"))
    except Exception:  # a champion from before profiles were logged: no drift reference
        reference = None
    return recorded, reference, str(current.version)


@task(name="drift", cache_policy=NO_CACHE)
def measure_drift(
    config: FinetuneConfig, reference: DataProfile, max_label_distance: float, max_length_psi: float
) -> DriftReport:
    with tempfile.TemporaryDirectory() as scratch:  # the snapshot streamed to Parquet, never whole in memory
        raw = Path(scratch) / "train.parquet"
        read_to_parquet(Path(config.data.train), raw)
        data = config.data
        texts = text_columns(data.text_column, data.text_pair_column)
        require_columns(raw, data.train, texts, data.label_column)
        current = profile_parquet(
            raw, None, config.task, texts=list(texts.values()), label=data.label_column, separator=data.label_separator
        )
    report = compare(reference, current, max_label_distance, max_length_psi)
    create_markdown_artifact(
        key="drift",
        markdown=f"# Drift against the champion's training data\n\n{report.summary()}\n\n"
        f"**{'DRIFTED' if report.drifted else 'within thresholds'}**",
        description=report.summary(),
    )
    return report
