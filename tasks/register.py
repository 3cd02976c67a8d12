"""Log the trained model to MLflow as a pyfunc model and register it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

import finetune_core
from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.chunks import parquet_chunks
from finetune_core.data.prepare import PreparedData
from finetune_core.faults import maybe_kill
from finetune_core.redaction import without_credentials
from finetune_core.serving import SHIPPED_MODULES
from finetune_core.serving.onnx_predictor import served_graph
from finetune_core.serving.predictor import Predictor
from tasks.mlflow_io.logged_models import DIGEST_TAG, logged_already, model_dir_digest
from tasks.mlflow_io.registry_lookups import CHALLENGER, CHAMPION, alias_version, versions_of
from tasks.mlflow_io.tracking import SplitDataset, active_run, log_metrics

# MLflow "models from code": this file is copied into the model; importing it here would run it.
SERVING_MODEL_FILE = Path(__file__).with_name("mlflow_io") / "serving_model.py"
# What the logged model needs to load and predict in a fresh environment.
_RUNTIME_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "pandas",
    "numpy",
    "scipy",
    "scikit-learn",
    "pydantic",
    "onnxruntime",
)
# A model whose ONNX graph passed parity serves without torch (the `serve` extra): its
# environment is mlflow-skinny and these (docs/how-to/serving.md); `runtime torch` then needs the full install.
_ONNX_RUNTIME_PACKAGES = ("onnxruntime", "tokenizers", "pandas", "numpy", "pydantic")


class RegisteredVersion(BaseModel):
    name: str
    version: str
    model_uri: str  # the logged model (models:/<model id>)
    registry_uri: str  # models:/NAME/VERSION
    champion: bool = False  # whether the champion alias moved to it


def _pip_requirements(packages: tuple[str, ...] = _RUNTIME_PACKAGES, mlflow_package: str = "mlflow") -> list[str]:
    pins = [f"{mlflow_package}=={mlflow.__version__}"]
    for package in packages:
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def serving_code(target: Path) -> Path:
    """A copy of the ``finetune_core`` modules the served model imports, and no others."""
    source = Path(finetune_core.__file__).resolve().parents[1]
    for relative in SHIPPED_MODULES:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, destination)
    return target / "finetune_core"


def log_pyfunc(model_dir: Path, example: pd.DataFrame, run_id: str) -> str:
    """Log a model directory as a pyfunc model (signature and input example from ``example``)
    shipping only the serving code; returns the logged model's URI."""
    from mlflow.models import infer_signature

    # `runtime`: auto | onnx | torch per request (tasks/mlflow_io/serving_model.py)
    signature = infer_signature(example, Predictor.load(model_dir).predict_frame(example), params={"runtime": "auto"})
    onnx = served_graph(model_dir) is not None
    requirements = _pip_requirements(_ONNX_RUNTIME_PACKAGES, "mlflow-skinny") if onnx else _pip_requirements()
    digest = model_dir_digest(model_dir)
    existing = logged_already(run_id, digest)
    if existing is not None:  # logged before this run was killed and resumed
        return existing
    with active_run(run_id), tempfile.TemporaryDirectory() as scratch:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVING_MODEL_FILE),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(serving_code(Path(scratch)))],
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            tags={DIGEST_TAG: digest},
        )
    return info.model_uri


def model_id_of(model_uri: str) -> str:
    """The logged model's id: MLflow 3 names a logged model ``models:/<model id>``."""
    if not model_uri.startswith("models:/m-"):
        raise ValueError(f"not a logged model's URI: {model_uri}")
    return model_uri.removeprefix("models:/")


@task(name="log-model", cache_policy=NO_CACHE)
def log_model(
    config: FinetuneConfig,
    prepared: PreparedData,
    model_dir: Path,
    run_id: str,
    test_metrics: dict[str, float] | None = None,
    test_dataset: SplitDataset | None = None,
) -> str:
    """Log model, tokenizer and label map as one pyfunc model with signature and input example;
    then its test metrics as ``test/…``, on the run and on the logged model's page (measured on
    ``test_dataset``)."""
    columns = prepared.text_columns  # the signature names each text column (both of a sentence pair)
    examples = next(parquet_chunks(prepared.paths["test"], 3, list(columns))())  # not the whole split
    model_uri = log_pyfunc(model_dir, examples[list(columns)].rename(columns=columns), run_id)
    if test_metrics:
        log_metrics(run_id, test_metrics, prefix="test/", model_id=model_id_of(model_uri), dataset=test_dataset)
    get_run_logger().info("logged model %s", model_uri)
    maybe_kill("logged-model")
    return model_uri


@task(name="register-model", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def register_model(
    config: FinetuneConfig,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    description: str = "",
    gate_passed: bool = True,
) -> RegisteredVersion:
    """Register the logged model with its description and tags; `challenger` moves to it, and
    `champion` too when the gates passed. Idempotent per run, so a retry never registers twice."""
    client, name = MlflowClient(), config.mlflow.registered_model
    existing = [v for v in versions_of(client, name) if v.run_id == run_id]
    model_version = existing[0] if existing else mlflow.register_model(model_uri, name, tags=tags)
    version = str(model_version.version)
    maybe_kill("registered")
    for key, value in tags.items():  # also on a retry that found the version already there
        client.set_model_version_tag(name, version, key, value)
    if description:
        client.update_model_version(name, version, description=description)
    client.set_registered_model_alias(name, CHALLENGER, version)
    current = alias_version(client, name, CHAMPION)
    previous = str(current.version) if current is not None else None
    if gate_passed and previous != version:
        if previous is not None:
            client.set_model_version_tag(name, version, "previous_champion", previous)
        client.set_registered_model_alias(name, CHAMPION, version)
    get_run_logger().info(
        "registered %s version %s (%s)", name, version, "champion" if gate_passed else "challenger only: gates failed"
    )
    return RegisteredVersion(
        name=name, version=version, model_uri=model_uri, registry_uri=f"models:/{name}/{version}", champion=gate_passed
    )


def git_commit() -> str:
    """The pipeline code's commit, "+dirty" when it has uncommitted changes; "unknown" outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def registry_lock_name(registered_model: str) -> str:
    return f"finetune-registry-{registered_model}"


def ensure_registry_lock(registered_model: str) -> str:
    """A Prefect global concurrency limit of 1 per registered model: the champion comparison,
    the gates and the alias moves of two runs never interleave, so two runs started together
    never both promote against the same old champion."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = registry_lock_name(registered_model)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # another run created it first
                pass
    return name


# A live run renews its lease; one killed holding the lock frees it when the Prefect server revokes
# the lease. A store that never revokes it (a temporary API killed with the run) would make the next
# run wait for ever: the wait is bounded and names the command that frees it (docs/concepts/resume.md).
REGISTRY_LEASE_SECONDS = 60
REGISTRY_WAIT_SECONDS = 1800


class RegistryLockTimeout(RuntimeError):
    """The registry lock stayed taken past ``REGISTRY_WAIT_SECONDS``."""


@contextmanager
def holding_registry_lock(registered_model: str, wait_seconds: float = REGISTRY_WAIT_SECONDS) -> Iterator[None]:
    """From measuring the champion to moving its alias, one run per registered model at a time."""
    from prefect.concurrency.sync import concurrency

    name = ensure_registry_lock(registered_model)
    acquired = False
    try:
        with concurrency(
            name, occupy=1, strict=True, lease_duration=REGISTRY_LEASE_SECONDS, timeout_seconds=wait_seconds
        ):
            acquired = True
            yield
    except TimeoutError as exc:
        if acquired:  # raised by the work inside the lock, not by the wait for it
            raise
        raise RegistryLockTimeout(
            f"the registry lock {name} stayed taken for {wait_seconds:.0f} s: another run is registering "
            f"{registered_model}, or a run killed while registering left it taken. If no run is registering, "
            f"free it with `prefect gcl update {name} --active-slots 0` and run the same command again."
        ) from exc


def publish_version(version: RegisteredVersion, verdict_summary: str, tracking_uri: str) -> None:
    """A Markdown artifact for MLOps engineers: the gate decision and where the version is."""
    from prefect.artifacts import create_markdown_artifact

    alias = "champion" if version.champion else "rejected by the gates, challenger only"
    link = f"`{version.registry_uri}`"
    if tracking_uri.startswith("http"):
        base = without_credentials(tracking_uri).rstrip("/")
        link = f"[{version.registry_uri}]({base}/#/models/{version.name}/versions/{version.version})"
    create_markdown_artifact(
        key="registered-version",
        markdown=f"# {version.name} version {version.version}: {alias}\n\nGates {verdict_summary}\n\nModel: {link}\n",
        description=f"{version.name} v{version.version} ({alias})",
    )
