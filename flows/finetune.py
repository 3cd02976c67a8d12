"""The fine-tuning pipeline as a Prefect flow; it reads as the DAG:

read data → validate (Great Expectations) → prepare → augment → select backbone → train frozen
→ train unfrozen → calibrate → evaluate → log model → re-evaluate the champion on this test set
→ evaluation gates → review files → register (challenger; champion when the gates pass)

``resume=RUN_DIR`` continues a killed run from its last finished epoch, in the same MLflow run.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from pydantic import BaseModel

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.errors import ConfigError
from finetune_core.run_layout import RunLayout
from tasks.backbone import select_backbone, selection_reason, task_runner
from tasks.data import augment, prepare_data, read_data, validate_data
from tasks.gates import apply_gates, describe_version, evaluate_champion, log_review_files
from tasks.register import ensure_registry_lock, git_commit, log_model, publish_version, register_model
from tasks.tracking import log_config, log_json
from tasks.train import calibrate, evaluate, train_frozen, train_unfrozen


class FinetuneResult(BaseModel):
    metrics: dict[str, float]
    stages: dict[str, dict]
    calibration: dict[str, float]
    mlflow_run_id: str
    model_uri: str
    model_version: str
    registered_model: str
    tracking_uri: str
    run_dir: str
    backbone: str
    gate_passed: bool = True
    gate_reasons: list[str] = []
    champion: bool = False  # whether this version became the champion
    previous_champion: str | None = None


def _new_run_dir(config: FinetuneConfig) -> RunLayout:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run_dir = Path(config.output_dir) / f"{stamp}-{(flow_run.get_id() or uuid.uuid4().hex)[:8]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunLayout(run_dir.resolve())


def _resumed_run(config: FinetuneConfig, resume: str) -> tuple[RunLayout, str | None]:
    layout = RunLayout(Path(resume).resolve())
    record = layout.record
    if not record.is_file():
        raise ConfigError(f"--resume {resume}: not a run directory (no {record.name})")
    saved = json.loads(record.read_text())
    if saved["config_hash"] != config.fingerprint():
        raise ConfigError(f"--resume {resume}: the configuration differs from the one this run started with")
    return layout, saved.get("mlflow_run_id")


@flow(name="finetune", log_prints=True)
def finetune(
    config: FinetuneConfig, resume: str | None = None, extra_tags: dict[str, str] | None = None
) -> FinetuneResult:
    """Fine-tune a pretrained backbone on labelled text: frozen head stage, then unfrozen stage.
    ``extra_tags`` go on the run and the registered version (e.g. the retrain snapshot)."""
    layout, mlflow_run_id = _resumed_run(config, resume) if resume else (_new_run_dir(config), None)
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    mlflow.set_experiment(config.mlflow.experiment)
    # One MLflow run per flow run (a resumed run continues its own); leaving the block on an
    # exception marks it FAILED.
    with mlflow.start_run(run_id=mlflow_run_id, run_name=None if mlflow_run_id else flow_run.get_name()) as run:
        run_id = run.info.run_id
        layout.record.write_text(json.dumps({"config_hash": config.fingerprint(), "mlflow_run_id": run_id}))
        mlflow.set_tags(
            {"prefect.flow_run_id": str(flow_run.get_id()), "task": config.task, "config_hash": config.fingerprint()}
        )
        if extra_tags:
            mlflow.set_tags(extra_tags)
        if not mlflow_run_id:
            log_config(run_id, config)

        raw = read_data(config, layout)
        validate_data(config, raw, layout, run_id)
        prepared = prepare_data(config, raw, layout, run_id)
        prepared = augment(config, prepared, run_id)
        selection = select_backbone.with_options(task_runner=task_runner(config))(config, prepared, layout, run_id)
        backbone = selection.selected.path
        frozen = train_frozen(
            config, prepared, backbone, layout, run_id, resume=bool(resume), known_features=selection.selected.features
        )
        unfrozen = train_unfrozen(config, prepared, layout, run_id, resume=bool(resume))
        calibration = calibrate(config, prepared, layout, run_id)
        metrics = evaluate(config, prepared, layout, run_id)
        model_uri = log_model(config, prepared, layout.model, run_id)

        stages = {s.stage: s.as_dict() for s in (frozen, unfrozen)}
        files = log_review_files(config, prepared, layout, stages, run_id)
        # From measuring the champion to moving its alias, one run per registered model at a time.
        with concurrency(ensure_registry_lock(config.mlflow.registered_model), occupy=1, strict=True):
            champion = evaluate_champion(config, prepared, layout, run_id)
            verdict = apply_gates(config, prepared, layout, metrics, champion, run_id)
            description = describe_version(
                config, prepared, backbone, selection_reason(selection), stages, metrics, verdict, files, run_id
            )
            tags = {
                "task": config.task,
                "backbone": backbone,
                "data_fingerprint": prepared.fingerprint,
                "config_hash": config.fingerprint(),
                "git_commit": git_commit(),
                "gate": "passed" if verdict.passed else "failed",
                **(extra_tags or {}),
            }
            version = register_model(config, model_uri, run_id, tags, description, verdict.passed)
        publish_version(version, verdict.summary(), config.mlflow.tracking_uri)

        result = FinetuneResult(
            metrics=metrics,
            stages=stages,
            calibration=calibration,
            mlflow_run_id=run_id,
            model_uri=model_uri,
            model_version=version.version,
            registered_model=version.name,
            tracking_uri=config.mlflow.tracking_uri,
            run_dir=str(layout.root),
            backbone=backbone,
            gate_passed=verdict.passed,
            gate_reasons=verdict.reasons,
            champion=version.champion,
            previous_champion=verdict.champion_version,
        )
        log_json(run_id, result.model_dump(), "summary.json")
    get_run_logger().info(
        "MLflow run %s registered %s version %s (gates %s)",
        run_id,
        version.name,
        version.version,
        "passed: champion" if verdict.passed else "failed: challenger only",
    )
    return result
