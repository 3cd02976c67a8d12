"""Load and check the data (Prefect tasks over finetune_core.data)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from finetune_core.config import FinetuneConfig
from finetune_core.data import PreparedData, basic_checks, prepare_data
from tasks.tracking import log_json, log_metrics


@task(name="load-data", cache_policy=NO_CACHE)
def load_data(config: FinetuneConfig, run_dir: Path) -> PreparedData:
    """Read train/validation/test, map labels, split; the prepared splits go to run_dir/data."""
    return prepare_data(config, Path(run_dir) / "data")


@task(name="check-data", cache_policy=NO_CACHE)
def check_data(config: FinetuneConfig, prepared: PreparedData, run_id: str) -> dict:
    summary = basic_checks(prepared, config)
    log_metrics(run_id, {f"rows_{split}": n for split, n in prepared.rows.items()}, prefix="data/")
    log_json(run_id, {**summary, "labels": prepared.labels}, "data/summary.json")
    return summary
