"""Label review as a Prefect task: out-of-fold predictions over the frozen features flag the train
rows whose label is probably wrong (finetune_core.evaluation.label_review); the CSV, a table
artifact, the metric and, at the error level, the stop. docs/concepts/label-review.md."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.copies import train_copies
from finetune_core.data.prepare import PreparedData
from finetune_core.errors import DataError
from finetune_core.evaluation import suspect_labels
from finetune_core.evaluation.cross_fit import review_cross_fitted
from finetune_core.evaluation.label_review import originals_by_margins
from finetune_core.run_layout import RunLayout
from finetune_core.training.margins import MARGINS_FILE, read_margins
from finetune_core.training.recipe import Recipe
from tasks.mlflow_io.tracking import log_metrics

ARTIFACT_ROWS = 50  # the Prefect table's rows; the CSV holds every flagged row


def calibrates_from_folds(config: FinetuneConfig, trained: FinetuneConfig, recipe: Recipe) -> bool:
    """Whether the temperature comes from the out-of-fold logits: calibration asked for, a
    validation split too small to fit it on, and the head's logits served as they are (no stage
    trains the network after it)."""
    head_served = trained.training.strategy == "linear-probe" or trained.training.unfrozen.epochs == 0
    return config.training.calibrate and recipe.validation != "used" and head_served


@task(name="review-labels", cache_policy=NO_CACHE)
def review_labels(
    config: FinetuneConfig,
    trained: FinetuneConfig,
    prepared: PreparedData,
    recipe: Recipe,
    encoder: str,
    layout: RunLayout,
    run_id: str,
    untuned: str | None = None,
) -> tuple[dict, PreparedData]:
    """Flag suspect train labels (``encoder``: the frozen stage's backbone; ``untuned``: the one
    before contrastive tuning, when ``encoder`` is the tuned one); returns the summary
    the version description shows and the data the later stages train on (flagged rows dropped
    when ``training.drop_suspect_labels``). Stops the run at ``validation.suspect_labels: error``."""
    from mlflow import MlflowClient

    folds_calibrate = calibrates_from_folds(config, trained, recipe) and prepared.task == "classification"
    if config.validation.suspect_labels == "off" and not folds_calibrate:
        return {"skipped": "validation.suspect_labels: off"}, prepared
    # the tuned encoder saw every row: fold encoders that did not (docs/benchmarks/label-review.md)
    crossed = folds_calibrate and untuned not in (None, encoder)
    if crossed:
        run = review_cross_fitted(trained, prepared, untuned, layout.review)
    else:
        run = suspect_labels.review_train_split(trained, prepared, encoder, layout.review)
    client, logger = MlflowClient(), get_run_logger()
    if not folds_calibrate:  # only a temperature to fit on it makes the logits worth keeping
        (layout.review / suspect_labels.OUT_OF_FOLD_FILE).unlink(missing_ok=True)
    else:
        how = ", each fold's encoder tuned without its rows" if crossed else ""
        client.log_param(run_id, "calibration.source", f"out-of-fold ({run.folds} folds over the train rows{how})")
    if run.review is None or config.validation.suspect_labels == "off":
        logger.info("label review skipped: %s", run.skipped or "validation.suspect_labels: off")
        return {"skipped": run.skipped or "validation.suspect_labels: off", "calibration_folds": run.folds}, prepared
    review = run.review
    summary = _publish(review, prepared, layout, run_id, suspect_labels.SUSPECTS_FILE, "", "suspect-labels")
    client.log_param(run_id, "labels.review_method", f"{review.method}, {run.folds}-fold out-of-fold")
    summary.update(folds=run.folds, limit=config.validation.max_suspect_label_fraction)
    _apply_level(config, review, summary, logger)
    if config.training.drop_suspect_labels and len(review.rows):
        kept = suspect_labels.without_rows(prepared, review.rows, layout.review)
        client.log_artifact(run_id, str(layout.review / suspect_labels.DROPPED_FILE), "review")
        client.set_tag(run_id, "data_fingerprint", kept.fingerprint)
        summary["dropped"] = len(review.rows)
        copies = prepared.rows["train"] - kept.rows["train"] - len(review.rows)
        with_copies = f" with their {copies} augmented copies" if copies else ""
        logger.warning(
            "training.drop_suspect_labels: %d flagged rows%s dropped from train", len(review.rows), with_copies
        )
        prepared = kept
    return summary, prepared


def _publish(review, prepared: PreparedData, layout: RunLayout, run_id: str, file: str, metric: str, key: str) -> dict:
    """One reading's flagged rows where reviewers look: ``file`` under review/ logged with the run, the
    metrics labels/{metric}suspects and labels/{metric}suspect_fraction, the Prefect table ``key``;
    returns the summary the version description shows."""
    from mlflow import MlflowClient

    frame = suspect_labels.suspects_frame(review, prepared)
    path = suspect_labels.write_suspects(review, prepared, layout.review, file)
    MlflowClient().log_artifact(run_id, str(path), "review")
    counts = {f"{metric}suspect_fraction": review.fraction, f"{metric}suspects": len(review.rows)}
    log_metrics(run_id, counts, prefix="labels/")
    create_table_artifact(
        key=key,
        table=frame.head(ARTIFACT_ROWS).to_dict(orient="records"),
        description=f"{len(review.rows)} of {review.total} train labels flagged ({review.method}); "
        f"score: {review.score_name}",
    )
    return {
        "method": review.method,
        "score": review.score_name,
        "suspects": len(review.rows),
        "total": review.total,
        "fraction": review.fraction,
        "file": f"review/{file}",
        "table": suspect_labels.suspects_table(frame),
    }


def _apply_level(config: FinetuneConfig, review, summary: dict, logger) -> None:
    """Above the limit: a warning, or (``error``) the run stops, naming the count and the file."""
    limit = config.validation.max_suspect_label_fraction
    above, message = suspect_labels.level_message(review, limit, summary["file"])
    if not above:
        logger.info("label review: %s", message)
        return
    if config.validation.suspect_labels == "error":
        raise DataError(f"{message} (validation.suspect_labels: error)")
    summary["warning"] = message
    logger.warning("label review: %s", message)


@task(name="review-labels-after-training", cache_policy=NO_CACHE)
def review_after_training(config: FinetuneConfig, prepared: PreparedData, layout: RunLayout, run_id: str) -> dict:
    """The second reading: the train rows whose margin stayed below 0 through stage 2's epochs (the
    area under the margin, recorded as the stage trained: no extra training), as
    review/suspect_labels_training.csv, a table artifact and metrics. A reading list: it stops
    nothing and drops nothing. {} where stage 2 recorded no margins (single-label classification only)."""
    saved = read_margins(layout.review / MARGINS_FILE)
    if saved is None or config.validation.suspect_labels == "off":
        return {}
    review = originals_by_margins(*saved, train_copies(prepared.paths["train"]))
    file, key = suspect_labels.TRAINING_SUSPECTS_FILE, "suspect-labels-after-training"
    summary = _publish(review, prepared, layout, run_id, file, "training_", key)
    flagged = f"{len(review.rows)} of {review.total} train labels flagged ({review.method})"
    get_run_logger().info("label review after training: %s", flagged)
    return summary


def _champion_rows(recorded: dict | None):
    """The champion's train rows as columns text (and text_pair), from the file its recorded
    configuration names; None without a champion or when that file is gone."""
    import tempfile

    import pandas as pd

    from finetune_core.data.columns import text_columns
    from finetune_core.data.readers import read_to_parquet

    data = (recorded or {}).get("data") or {}
    if not data.get("train") or not Path(data["train"]).is_file():
        return None
    texts = text_columns(data.get("text_column", "text"), data.get("text_pair_column"))
    columns = {source: column for column, source in texts.items()}
    with tempfile.TemporaryDirectory() as scratch:
        read_to_parquet(Path(data["train"]), Path(scratch) / "train.parquet")
        return pd.read_parquet(Path(scratch) / "train.parquet", columns=list(columns)).rename(columns=columns)


@task(name="review-new-labels", cache_policy=NO_CACHE)
def report_new_suspects(run_dir: str, run_id: str, recorded: dict | None) -> dict[str, int]:
    """Retraining: each reading's suspect labels among the rows the snapshot added since the champion
    (``recorded``: its configuration), as review/suspect_labels_new.csv (and
    suspect_labels_training_new.csv for the second reading) with a Prefect table each. Returns their
    counts by file (none for a reading the run did not make)."""
    previous = _champion_rows(recorded)
    since = "since the champion" if previous is not None else "(no champion train file to compare: every row)"
    counts = {}
    for name, key in (
        (suspect_labels.SUSPECTS_FILE, "new-suspect-labels"),
        (suspect_labels.TRAINING_SUSPECTS_FILE, "new-suspect-labels-after-training"),
    ):
        path = Path(run_dir) / "review" / name
        if path.is_file():
            counts[name] = _report_new_rows(path, previous, run_id, key, since)
    return counts


def _report_new_rows(path: Path, previous, run_id: str, key: str, since: str) -> int:
    import pandas as pd
    from mlflow import MlflowClient

    fresh = suspect_labels.new_rows_only(pd.read_csv(path, keep_default_na=False), previous)
    out = path.with_name(path.stem + "_new.csv")
    fresh.to_csv(out, index=False)
    MlflowClient().log_artifact(run_id, str(out), "review")
    create_table_artifact(
        key=key,
        table=fresh.head(ARTIFACT_ROWS).to_dict(orient="records"),
        description=f"{len(fresh)} suspect labels ({path.name}) among the rows added {since}",
    )
    get_run_logger().info("label review (%s): %d suspect labels among the rows added %s", path.name, len(fresh), since)
    return len(fresh)
