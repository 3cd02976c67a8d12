"""Read, validate, prepare and augment the data (Prefect tasks over finetune_core)."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from finetune_core.augmentation.eda import augment_prepared
from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.checks import basic_checks
from finetune_core.data.drift import profile_parquet
from finetune_core.data.folding import train_on_validation
from finetune_core.data.prepare import SPLITS, PreparedData, RawData, prepare_splits, read_splits
from finetune_core.data.snapshots import fingerprint
from finetune_core.errors import DataValidationError
from finetune_core.run_layout import RunLayout
from finetune_core.validation.report import markdown
from finetune_core.validation.suites import ValidationReport, validate_raw
from tasks.mlflow_io.tracking import SplitDataset, log_datasets, log_json, log_metrics

PROFILE_ARTIFACT = "data/profile.json"  # label shares and text-length histogram of the training split
CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}  # MLflow's dataset contexts


@task(name="read-data", cache_policy=NO_CACHE)
def read_data(config: FinetuneConfig, layout: RunLayout) -> RawData:
    """Read every configured file; unreadable input fails here naming the file (and line)."""
    return read_splits(config, layout.raw)


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(config: FinetuneConfig, raw: RawData, layout: RunLayout, run_id: str) -> ValidationReport | None:
    """Great Expectations suites on every split. Reports (Data Docs, JSON, a Markdown summary)
    reach MLflow and Prefect before an `error` failure stops the flow."""
    if not config.validation.enabled:
        return None
    report = validate_raw(config, raw, layout.validation)
    client = MlflowClient()
    client.log_artifact(run_id, report.result_json, "validation")
    if report.data_docs:
        client.log_artifacts(run_id, str(Path(report.data_docs).parent), "validation/data_docs")
    summary = markdown(report)
    client.log_text(run_id, summary, "validation/summary.md")
    create_markdown_artifact(markdown=summary, key="data-validation", description=report.summary())
    log_metrics(
        run_id,
        {
            "checks_failed_error": len(report.failures("error")),
            "checks_failed_warning": len(report.failures("warning")),
        },
        prefix="validation/",
    )
    logger = get_run_logger()
    for failure in report.failures("warning"):
        logger.warning("data validation warning: %s / %s (%s)", failure.split, failure.check, failure.observed)
    if not report.passed:
        raise DataValidationError(report)
    return report


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(config: FinetuneConfig, raw: RawData, layout: RunLayout, run_id: str) -> PreparedData:
    """Map labels, split, check; the prepared splits go to layout.data."""
    prepared = prepare_splits(config, layout.data, raw, drop_unusable=config.validation.enabled)
    prepared = train_on_validation(config, prepared)
    summary = basic_checks(prepared, config)
    log_metrics(run_id, {f"rows_{split}": n for split, n in prepared.rows.items()}, prefix="data/")
    log_metrics(run_id, {f"dropped_{split}": n for split, n in prepared.dropped.items()}, prefix="data/")
    log_json(run_id, {**summary, "labels": prepared.labels, "dropped": prepared.dropped}, "data/summary.json")
    # read in chunks: the train split may not fit in memory
    train_profile = profile_parquet(prepared.paths["train"], prepared.labels, prepared.task)
    log_json(run_id, train_profile.model_dump(), PROFILE_ARTIFACT)  # for drift checks
    return prepared


@task(name="augment", cache_policy=NO_CACHE)
def augment(config: FinetuneConfig, prepared: PreparedData, run_id: str) -> PreparedData:
    """Augmented copies of training rows (never validation or test); a new data fingerprint."""
    if not (config.augmentation.enabled or config.augmentation.swap_pairs):
        return prepared
    augmented, counts = augment_prepared(config, prepared)
    log_json(run_id, counts, "data/augmentation.json")
    log_metrics(run_id, {"rows_train_augmented": augmented.rows["train"]}, prefix="data/")
    MlflowClient().set_tag(run_id, "data_fingerprint", augmented.fingerprint)
    return augmented


def _context(split: str, prepared: PreparedData) -> str:
    """MLflow's context of ``split``: validation rows folded into train (a refit winner, `auto`'s contrastive
    recipe) are training inputs too, so the file they came from is named among the run's training datasets."""
    return "training" if split == "validation" and prepared.validation_in_train else CONTEXTS[split]


@task(name="record-datasets", cache_policy=NO_CACHE)
def record_datasets(config: FinetuneConfig, prepared: PreparedData, run_id: str) -> dict[str, SplitDataset]:
    """The splits trained and evaluated on, as the MLflow run's datasets: the file each came from,
    a digest of the prepared split (its file's bytes, streamed: no split is loaded) and its rows."""
    datasets = {
        split: SplitDataset(
            name=split,
            source=str(Path(getattr(config.data, split) or config.data.train).resolve()),  # held out: train's
            digest=fingerprint({split: prepared.paths[split]}),
            rows=prepared.rows[split],
            context=_context(split, prepared),
        )
        for split in SPLITS
    }
    log_datasets(run_id, list(datasets.values()))
    return datasets
