"""The champion re-measured on this run's test set, the evaluation gates, and the files
reviewers read (Prefect tasks; the logic is in finetune_core.evaluation)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.prepare import LABEL, TEXT, PreparedData
from finetune_core.errors import ConfigError
from finetune_core.evaluation.baseline import original_train_labels, trivial_baseline
from finetune_core.evaluation.gates import GateVerdict, evaluate_gates, per_example_scores
from finetune_core.evaluation.model_card import model_card, version_description
from finetune_core.evaluation.review import write_review_files
from finetune_core.metric_table import unknown_metrics
from finetune_core.metrics.served import comparable, predicted_ids, served_metrics
from finetune_core.redaction import redact_uri, without_credentials
from finetune_core.run_layout import RunLayout
from finetune_core.serving.predictor import load_meta
from tasks.mlflow_io.registry_lookups import CHAMPION, alias_version
from tasks.mlflow_io.tracking import log_json, log_metrics


class ChampionResult(BaseModel):
    version: str
    metrics: dict[str, float] | None = None  # None when not comparable on this data
    predictions: str | None = None  # path of its served predictions on this run's test set
    reason: str | None = None  # why it could not be compared


@task(name="evaluate-champion", cache_policy=NO_CACHE)
def evaluate_champion(
    config: FinetuneConfig, prepared: PreparedData, layout: RunLayout, run_id: str
) -> ChampionResult | None:
    """Load the current champion and score it on this run's test set (never on numbers from
    another dataset). None when there is no champion yet."""
    name = config.mlflow.registered_model
    current = alias_version(MlflowClient(), name, CHAMPION)
    if current is None:
        return None
    test = prepared.frame("test")
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    # each text by its source name: a single-text champion reads its own column and ignores a pair's
    inputs = {source: test[column].tolist() for column, source in prepared.text_columns.items()}
    served = model.predict(pd.DataFrame(inputs))
    reason = comparable(config.task, served, prepared.labels)
    if reason is not None:
        get_run_logger().warning("champion v%s not comparable: %s", current.version, reason)
        return ChampionResult(version=str(current.version), reason=reason)
    metrics = served_metrics(config.task, served, test[LABEL].to_numpy(), prepared.labels)
    path = layout.champion_predictions
    served.to_parquet(path, index=False)
    log_metrics(run_id, metrics, prefix="champion/")
    get_run_logger().info(
        "champion v%s on this test set: %s",
        current.version,
        {k: round(v, 4) for k, v in metrics.items() if not k.startswith("support")},
    )
    return ChampionResult(version=str(current.version), metrics=metrics, predictions=str(path))


@task(name="evaluation-gates", cache_policy=NO_CACHE)
def apply_gates(
    config: FinetuneConfig,
    prepared: PreparedData,
    layout: RunLayout,
    metrics: dict[str, float],
    champion: ChampionResult | None,
    run_id: str,
) -> GateVerdict:
    """Absolute thresholds on the test metrics; better than the trivial baseline (train's majority
    class or mean) on the same rows; no regression against the champion measured on the same
    rows; optionally a significant improvement (paired bootstrap)."""
    unknown = unknown_metrics(config.task, sorted(config.gates.metrics()), prepared.labels)
    if unknown:
        raise ConfigError(f"gates name metric(s) {unknown} that this run does not produce (classes: {prepared.labels})")
    scores = None
    comparable_champion = champion is not None and champion.metrics is not None
    if comparable_champion and config.gates.require_significant:
        ours = pd.read_parquet(layout.test_predictions)
        theirs = pd.read_parquet(champion.predictions)
        targets = ours["target"].to_numpy()
        scores = (
            per_example_scores(config.task, targets, predicted_ids(config.task, ours, prepared.labels)),
            per_example_scores(config.task, targets, predicted_ids(config.task, theirs, prepared.labels)),
        )
    baseline = None
    if config.gates.beat_baseline:
        targets = pd.read_parquet(layout.test_predictions, columns=["target"])["target"].to_numpy()
        train = original_train_labels(prepared.paths["train"])
        baseline = trivial_baseline(config.task, train, targets, prepared.labels)
        log_metrics(run_id, baseline.metrics, prefix="baseline/")
    verdict = evaluate_gates(
        config.task,
        metrics,
        config.gates,
        champion.metrics if champion else None,
        champion.version if champion else None,
        scores,
        not_comparable=champion.reason if champion else None,
        baseline=baseline,
        primary=config.training.metric,
    )
    log_json(run_id, verdict.model_dump(), "gates.json")
    MlflowClient().set_tag(run_id, "gate", "passed" if verdict.passed else "failed")
    logger = get_run_logger()
    (logger.info if verdict.passed else logger.warning)("evaluation gates %s", verdict.summary())
    return verdict


@task(name="review-files", cache_policy=NO_CACHE)
def log_review_files(
    config: FinetuneConfig, prepared: PreparedData, layout: RunLayout, stages: dict[str, dict], run_id: str
) -> dict[str, str]:
    """Plots, per-class report and worst-predicted test rows, logged under `review/`."""
    served = pd.read_parquet(layout.test_predictions)
    thresholds = load_meta(layout.model).thresholds if config.task == "multilabel" else None
    files = write_review_files(
        layout.review,
        config.task,
        served[TEXT].tolist(),
        served["target"].to_numpy(),
        served,
        prepared.labels,
        stages,
        thresholds,
    )
    client = MlflowClient()
    for path in files.values():
        client.log_artifact(run_id, str(path), "review")
    return {what: f"review/{Path(path).name}" for what, path in files.items()}


@task(name="describe-version", cache_policy=NO_CACHE)
def describe_version(
    config: FinetuneConfig,
    prepared: PreparedData,
    backbone: str,
    selection: str,
    stages: dict[str, dict],
    metrics: dict[str, float],
    verdict: GateVerdict,
    files: dict[str, str],
    run_id: str,
) -> str:
    """The registered version's Markdown description; the model card (the same plus intended
    use and the review files) is logged as `model_card.md`."""
    validation = "Great Expectations suites passed" if config.validation.enabled else "disabled"
    data = {
        "fingerprint": prepared.fingerprint,
        "rows": prepared.rows,
        "labels": prepared.labels,
        "augmented_rows": config.augmentation.enabled and prepared.rows["train"],
        "validation": validation,
    }
    tracking = mlflow.get_tracking_uri()
    run_link = f"run `{run_id}` ({redact_uri(tracking)})"
    if tracking.startswith("http"):
        experiment = MlflowClient().get_run(run_id).info.experiment_id
        run_link = f"[{run_id}]({without_credentials(tracking).rstrip('/')}/#/experiments/{experiment}/runs/{run_id})"
    description = version_description(
        config,
        backbone=backbone,
        selection=selection,
        data=data,
        stages=stages,
        metrics=metrics,
        verdict=verdict,
        run_link=run_link,
    )
    card = model_card(
        config,
        name=config.mlflow.registered_model,
        description=description,
        files={**files, "data_validation": "validation/summary.md", "gates": "gates.json"},
    )
    MlflowClient().log_text(run_id, card, "model_card.md")
    return description
