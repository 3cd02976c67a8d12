"""The fine-tuning pipeline as a Prefect flow; it reads as the DAG:

read data → validate (Great Expectations) → prepare → augment → select backbone → choose recipe
→ [tune the encoder on pairs, strategy contrastive] → train frozen → review labels → train unfrozen
→ read the labels again (stage 2's margins) → calibrate → evaluate
→ export the served forms (ONNX, int8; parity with PyTorch as a gate) → log model
→ re-evaluate the champion on this test set → evaluation gates → review files
→ register (challenger; champion when the gates pass)

A crashed run started again on the same configuration and data continues from its last
finished epoch, in the same MLflow run (``resume=RUN_DIR`` names a run directory explicitly).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import mlflow
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, State
from pydantic import BaseModel

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.tracking import with_resolved_tracking
from finetune_core.data.prepare import PreparedData
from finetune_core.errors import ConfigError
from finetune_core.evaluation.gates import GateVerdict
from finetune_core.evaluation.model_card import label_review_markdown
from finetune_core.model.backbone import backbone_identity
from finetune_core.redaction import redact_uri, store_digest
from finetune_core.run_layout import (
    RunLayout,
    claim_run_dir,
    inputs_digest,
    read_record,
    run_dir_key,
    write_record,
)
from finetune_core.selection.candidates import SelectionResult
from finetune_core.serving.forms import ServingReport
from finetune_core.training.recipe import Recipe
from tasks.backbone import select_backbone, selection_reason, task_runner
from tasks.data import augment, prepare_data, read_data, record_datasets, validate_data
from tasks.gates import apply_gates, describe_version, evaluate_champion, log_review_files
from tasks.mlflow_io.tracking import SplitDataset, log_config, log_json, use_store
from tasks.mlflow_io.tracking_server import naming_tracking_outages, require_tracking_server
from tasks.prefect_io.progress import set_run_progress, start_run_progress
from tasks.register import (
    RegisteredVersion,
    git_commit,
    holding_registry_lock,
    log_model,
    publish_version,
    register_model,
)
from tasks.review import review_after_training, review_labels
from tasks.serving import export_serving
from tasks.train import calibrate, choose_recipe, evaluate, train_contrastive, train_frozen, train_unfrozen


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


def _resumed_run(config: FinetuneConfig, resume: str) -> tuple[RunLayout, str | None]:
    layout = RunLayout(Path(resume).resolve())
    saved = read_record(layout)
    if saved is None:
        raise ConfigError(f"--resume {resume}: not a run directory (no readable {layout.record.name})")
    if saved["config_hash"] != config.fingerprint():
        raise ConfigError(f"--resume {resume}: the configuration differs from the one this run started with")
    store = config.mlflow.tracking_uri
    if not _same_store(saved, store):
        shown = saved.get("tracking_store_shown") or redact_uri(saved.get("tracking_uri") or "another store")
        raise ConfigError(
            f"--resume {resume}: this run is tracked in {shown}, but the tracking URI resolves to "
            f"{redact_uri(store)}; set mlflow.tracking_uri or MLFLOW_TRACKING_URI to the store it started in"
        )
    return layout, saved.get("mlflow_run_id")


def _same_store(saved: dict, store: str) -> bool:
    """The run record keeps a digest of the full URI (credentials included), never the URI itself;
    records written before that kept ``tracking_uri`` (or nothing)."""
    if "tracking_store" in saved:
        return saved["tracking_store"] == store_digest(store)
    return saved.get("tracking_uri") in (None, store)


@flow(name="finetune", log_prints=True)
def finetune(
    config: FinetuneConfig,
    resume: str | None = None,
    extra_tags: dict[str, str] | None = None,
    run_key: str | None = None,
) -> FinetuneResult:
    """Fine-tune a pretrained backbone on labelled text: frozen head stage, then unfrozen stage.
    ``extra_tags`` go on the run and the registered version (e.g. the retrain snapshot).

    The run directory is keyed by the configuration, the input files and ``run_key``: the same
    work started again after a crash (a flow retry, a deployment re-run after its worker was
    killed) continues the unfinished run from its last finished epoch, in the same MLflow run.
    ``resume=RUN_DIR`` names the directory explicitly."""
    config = with_resolved_tracking(config)  # config → MLFLOW_TRACKING_URI → sqlite:///mlflow.db
    require_tracking_server(config.mlflow.tracking_uri)  # a server that is down: named before anything starts
    if resume:
        return _pipeline(config, *_resumed_run(config, resume), extra_tags)
    data = config.data
    inputs = inputs_digest([data.train, data.validation, data.test])
    # the store is part of the key: an unfinished run is continued only in the store it started in
    key = run_dir_key(config.fingerprint() + config.mlflow.tracking_uri, inputs, run_key)
    with claim_run_dir(Path(config.output_dir), key) as claim:
        mlflow_run_id = (claim.record or {}).get("mlflow_run_id")
        if mlflow_run_id:
            get_run_logger().info(
                "continuing the unfinished run in %s (MLflow run %s)", claim.layout.root, mlflow_run_id
            )
        return _pipeline(config, claim.layout, mlflow_run_id, extra_tags)


@dataclass(frozen=True)
class _Run:
    """What every step of one flow run reads."""

    config: FinetuneConfig  # as given: its fingerprint keys resume and lineage
    layout: RunLayout
    run_id: str  # the MLflow run
    resuming: bool  # continuing an unfinished run: finished stages and epochs are not trained again
    progress: UUID | None  # the Prefect progress artifact, 0 to 100 % as the run goes
    extra_tags: dict[str, str]


@dataclass(frozen=True)
class _Data:
    """The data steps' output."""

    trained: FinetuneConfig  # what the stages run: strategy auto resolved, validation use decided
    recipe: Recipe
    prepared: PreparedData
    datasets: dict[str, SplitDataset]


@dataclass(frozen=True)
class _Trained:
    """The training steps' output."""

    selection: SelectionResult
    backbone: str  # the selected backbone's path
    prepared: PreparedData  # after the label review: what the model trained and is evaluated on
    review: dict
    stages: dict[str, dict]
    calibration: dict
    metrics: dict[str, float]


@naming_tracking_outages
def _pipeline(
    config: FinetuneConfig, layout: RunLayout, mlflow_run_id: str | None, extra_tags: dict[str, str] | None
) -> FinetuneResult | State:
    """The DAG, in ``layout``; ``mlflow_run_id`` set: continue that run (finished stages and
    epochs are not trained again)."""
    with _mlflow_run(config, layout, mlflow_run_id, extra_tags) as run_id:
        resuming, tags = mlflow_run_id is not None, extra_tags or {}
        run = _Run(config, layout, run_id, resuming, progress=start_run_progress(), extra_tags=tags)
        data = _prepare_data(run)  # read → validate → prepare → augment → choose the recipe → record datasets
        model = _select_and_train(run, data)  # backbone → [pairs] → frozen → review labels → unfrozen → evaluate
        serving = export_serving(
            config, model.prepared, layout, run_id
        )  # the logged model carries the form that passed
        model_uri = log_model(config, model.prepared, layout.model, run_id, model.metrics, data.datasets["test"])
        version, verdict = _gate_and_register(run, data, model, serving=serving, model_uri=model_uri)
        publish_version(version, verdict.summary(), config.mlflow.tracking_uri)
        set_run_progress(run.progress, 100.0, f"registered {version.name} version {version.version}")
        write_record(layout, finished=True)  # registered: the same work run again starts afresh
        result = _result(run, model, model_uri=model_uri, version=version, verdict=verdict)
        log_json(run_id, result.model_dump(), "summary.json")
    get_run_logger().info(
        "MLflow run %s registered %s version %s (gates %s)",
        run_id,
        version.name,
        version.version,
        "passed: champion" if verdict.passed else "failed: challenger only",
    )
    return result if verdict.passed else _rejected(result)


@contextmanager
def _mlflow_run(
    config: FinetuneConfig, layout: RunLayout, mlflow_run_id: str | None, extra_tags: dict[str, str] | None
) -> Iterator[str]:
    """One MLflow run per flow run (a resumed run continues its own), named in the run record;
    leaving the block on an exception marks it FAILED."""
    use_store(config.mlflow.tracking_uri)
    mlflow.set_experiment(config.mlflow.experiment)
    with mlflow.start_run(run_id=mlflow_run_id, run_name=None if mlflow_run_id else flow_run.get_name()) as run:
        run_id = run.info.run_id
        write_record(
            layout,
            config_hash=config.fingerprint(),
            mlflow_run_id=run_id,
            tracking_store=store_digest(config.mlflow.tracking_uri),
            tracking_store_shown=redact_uri(config.mlflow.tracking_uri),
            flow_run_id=str(flow_run.get_id()),
            finished=False,
        )
        mlflow.set_tags(
            {"prefect.flow_run_id": str(flow_run.get_id()), "task": config.task, "config_hash": config.fingerprint()}
        )
        if extra_tags:
            mlflow.set_tags(extra_tags)
        if not mlflow_run_id:
            log_config(run_id, config)
        yield run_id


def _prepare_data(run: _Run) -> _Data:
    """Read → validate → prepare → augment → choose the recipe → record the datasets."""
    config, layout, run_id = run.config, run.layout, run.run_id
    raw = read_data(config, layout)
    validate_data(config, raw, layout, run_id)
    prepared = prepare_data(config, raw, layout, run_id)
    prepared = augment(config, prepared, run_id)
    # `trained`: what the stages run (strategy auto resolved, validation use decided); `config` stays
    # the configuration as given (its fingerprint keys resume and lineage). Chosen before the
    # datasets are recorded: the recipe may fold held-out validation rows into train.
    trained, recipe, prepared = choose_recipe(config, prepared, run_id)
    datasets = record_datasets(config, prepared, run_id)
    return _Data(trained, recipe, prepared, datasets)


def _select_and_train(run: _Run, data: _Data) -> _Trained:
    """Select the backbone → [tune the encoder on pairs] → frozen stage → label review → unfrozen stage →
    calibrate → evaluate on test."""
    config, trained, layout, run_id = run.config, data.trained, run.layout, run.run_id
    selection = select_backbone.with_options(task_runner=task_runner(config))(config, data.prepared, layout, run_id)
    backbone = selection.selected.path
    tuned = []  # strategy contrastive: the encoder tuned on pairs first; the frozen stage loads it
    if trained.training.strategy == "contrastive":
        tuned = [train_contrastive(trained, data.prepared, backbone, layout, run_id, run.resuming, run.progress)]
    encoder = str(layout.contrastive) if tuned else backbone
    frozen = train_frozen(
        trained,
        data.prepared,
        encoder,
        layout,
        run_id,
        resume=run.resuming,
        known_features=None if tuned else selection.selected.features,  # selection's are the original's
        progress_artifact=run.progress,
    )
    # train labels the out-of-fold predictions doubt (docs/concepts/label-review.md); `error` stops here
    review, prepared = review_labels(
        config, trained, data.prepared, data.recipe, encoder, layout, run_id, untuned=backbone
    )
    unfrozen = train_unfrozen(trained, prepared, layout, run_id, resume=run.resuming, progress_artifact=run.progress)
    review["after_training"] = review_after_training(config, prepared, layout, run_id)  # stage 2's margins
    calibration = calibrate(trained, prepared, layout, run_id)
    metrics = evaluate(config, prepared, layout)
    stages = {s.stage: s.as_dict() for s in (*tuned, frozen, unfrozen)}
    recipe = data.recipe
    for info in stages.values():  # why this recipe, and whether validation chose epochs and temperature
        info["extra"].update(strategy=recipe.strategy, strategy_reason=recipe.reason, validation=recipe.validation)
    return _Trained(selection, backbone, prepared, review, stages, calibration, metrics)


def _gate_and_register(
    run: _Run, data: _Data, model: _Trained, *, serving: ServingReport, model_uri: str
) -> tuple[RegisteredVersion, GateVerdict]:
    """The review files; then, one run per registered model at a time: the champion re-measured on this
    test set → the gates → the version's description and tags → registered (champion when the gates pass)."""
    config, prepared, layout, run_id = run.config, model.prepared, run.layout, run.run_id
    files = log_review_files(config, prepared, layout, model.stages, run_id)
    with holding_registry_lock(config.mlflow.registered_model):
        champion = evaluate_champion(config, prepared, layout, run_id)
        verdict = apply_gates(config, prepared, layout, model.metrics, champion, run_id)
        identity = backbone_identity(model.selection.selected.candidate, model.backbone)  # as asked for + weights hash
        why = selection_reason(model.selection)
        description = describe_version(
            data.trained, prepared, identity.describe(), why, model.stages, model.metrics, verdict, files, run_id
        )
        description += serving.markdown()  # served form, parity, latency
        description += label_review_markdown(model.review, model.calibration)  # suspect labels, few-shot temperature
        tags = {
            "task": config.task,
            **identity.tags(),  # backbone (as asked for), backbone_sha256, backbone_path
            "data_fingerprint": prepared.fingerprint,
            "config_hash": config.fingerprint(),
            "git_commit": git_commit(),
            "gate": "passed" if verdict.passed else "failed",
            **run.extra_tags,
        }
        version = register_model(config, model_uri, run_id, tags, description, verdict.passed)
    return version, verdict


def _result(
    run: _Run, model: _Trained, *, model_uri: str, version: RegisteredVersion, verdict: GateVerdict
) -> FinetuneResult:
    return FinetuneResult(
        metrics=model.metrics,
        stages=model.stages,
        calibration=model.calibration,
        mlflow_run_id=run.run_id,
        model_uri=model_uri,
        model_version=version.version,
        registered_model=version.name,
        tracking_uri=redact_uri(run.config.mlflow.tracking_uri),
        run_dir=str(run.layout.root),
        backbone=model.backbone,
        gate_passed=verdict.passed,
        gate_reasons=verdict.reasons,
        champion=version.champion,
        previous_champion=verdict.champion_version,
    )


def _rejected(result: FinetuneResult) -> State:
    """A gate-rejected run ends `Completed` named `Rejected`, so the Prefect UI tells it from an
    accepted one (the `registered-version` artifact says why); ``finetune(...)`` still returns
    the FinetuneResult, and the CLI exits 3."""
    reasons = "; ".join(result.gate_reasons)
    message = f"{result.registered_model} v{result.model_version} rejected by the gates: {reasons}"
    return Completed(name="Rejected", message=message, data=result)
