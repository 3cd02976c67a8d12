"""Scheduled retraining: the newest data snapshot → (skip if already trained) → drift against
the champion's training data → the `finetune` flow on the snapshot, with the champion's
recorded configuration → gates on the snapshot's test split → promote or not → the suspect
labels among the rows the snapshot added since the champion (docs/concepts/label-review.md).
"""

from __future__ import annotations

from typing import Literal

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger
from pydantic import BaseModel

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.loading import validate_config
from finetune_core.config.tracking import credentials_to_environment, with_resolved_tracking
from finetune_core.data.snapshots import Snapshot, newest_snapshot
from finetune_core.errors import DataError
from finetune_core.evaluation.suspect_labels import SUSPECTS_FILE, TRAINING_SUSPECTS_FILE
from flows.finetune import finetune
from tasks.mlflow_io.registry_lookups import versions_of
from tasks.retrain import champion_records, measure_drift
from tasks.review import report_new_suspects


class RetrainResult(BaseModel):
    snapshot: str
    skipped: bool
    reason: str = ""
    model_version: str | None = None
    champion: bool = False
    drift: str | None = None
    new_suspect_labels: int | None = None  # flagged among the rows added since the champion
    new_suspect_labels_after_training: int | None = None  # the same, by the second reading (stage 2's margins)


def _already_trained(client: MlflowClient, name: str, snapshot: Snapshot):
    return next(
        (v for v in versions_of(client, name) if v.tags.get("snapshot_fingerprint") == snapshot.fingerprint), None
    )


def snapshot_config(
    base: dict, deployment: FinetuneConfig, snapshot: Snapshot, notices: list[str] | None = None
) -> FinetuneConfig:
    """``base`` (the champion's or the given config) on the snapshot's files, with the
    deployment's tracking settings and output directory; a retired key the champion's recorded
    config holds is dropped, with a line in ``notices``."""
    raw = dict(base)
    raw["data"] = {
        **raw["data"],
        "train": snapshot.files["train"],
        "test": snapshot.files["test"],
        "validation": snapshot.files.get("validation"),
    }
    raw["mlflow"] = deployment.mlflow.model_dump(mode="json")
    raw["output_dir"] = str(deployment.output_dir)
    return validate_config(raw, notices)


@flow(name="retrain", log_prints=True)
def retrain(
    incoming: str,
    config: FinetuneConfig,
    use_champion_config: bool = True,
    max_label_drift: float = 0.2,
    max_length_psi: float = 0.25,
    on_drift: Literal["warn", "stop"] = "warn",
) -> RetrainResult:
    """Retrain on the newest snapshot in ``incoming`` unless a version already carries its fingerprint."""
    logger = get_run_logger()
    snapshot = newest_snapshot(incoming)
    config = with_resolved_tracking(config)  # config → MLFLOW_TRACKING_URI → sqlite:///mlflow.db
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    client = MlflowClient()
    done = _already_trained(client, config.mlflow.registered_model, snapshot)
    if done is not None:
        reason = f"version {done.version} was already trained on snapshot {snapshot.name} ({snapshot.fingerprint})"
        logger.info("skipped: %s", reason)
        return RetrainResult(snapshot=snapshot.name, skipped=True, reason=reason)
    recorded, reference, champion = champion_records(config)
    base = recorded if (use_champion_config and recorded) else config.model_dump(mode="json")
    notices: list[str] = []
    effective = snapshot_config(base, config, snapshot, notices)
    for notice in notices:  # an old champion's config: it still retrains, and the run's log says what changed
        logger.warning(notice)
    tags = {"snapshot": snapshot.name, "snapshot_fingerprint": snapshot.fingerprint, "trigger": "retrain"}
    drift = None
    if reference is not None:
        report = measure_drift(effective, reference, max_label_drift, max_length_psi)
        drift, tags["drift"] = report.summary(), "drifted" if report.drifted else "ok"
        if report.drifted:
            if on_drift == "stop":
                raise DataError(
                    f"{snapshot.files['train']}: drift against champion v{champion}'s data: {report.summary()}"
                )
            logger.warning("drift against champion v%s's data: %s", champion, report.summary())
    result = finetune(credentials_to_environment(effective), extra_tags=tags)  # never a subflow parameter
    suspects = report_new_suspects(result.run_dir, result.mlflow_run_id, recorded)
    return RetrainResult(
        snapshot=snapshot.name,
        skipped=False,
        model_version=result.model_version,
        champion=result.champion,
        drift=drift,
        new_suspect_labels=suspects.get(SUSPECTS_FILE),
        new_suspect_labels_after_training=suspects.get(TRAINING_SUSPECTS_FILE),
    )
