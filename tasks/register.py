"""Log the trained model to MLflow as a pyfunc model and register it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

import finetune_core
from finetune_core.config import FinetuneConfig
from finetune_core.data import TEXT, PreparedData
from tasks.tracking import active_run

# MLflow "models from code": this file is copied into the model; importing it here would run it.
SERVING_MODEL_FILE = Path(__file__).with_name("serving_model.py")
# What the logged model needs to load and predict in a fresh environment.
_RUNTIME_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy", "scipy", "scikit-learn", "pydantic")


class RegisteredVersion(BaseModel):
    name: str
    version: str
    model_uri: str  # the logged model (models:/<model id>)
    registry_uri: str  # models:/NAME/VERSION


def _pip_requirements() -> list[str]:
    pins = [f"mlflow=={mlflow.__version__}"]
    for package in _RUNTIME_PACKAGES:
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


@task(name="log-model", cache_policy=NO_CACHE)
def log_model(config: FinetuneConfig, prepared: PreparedData, model_dir: Path, run_id: str) -> str:
    """Log model, tokenizer and label map as one pyfunc model with signature and input example."""
    from mlflow.models import infer_signature

    from finetune_core.predict import Predictor

    examples = prepared.frame("test")[TEXT].head(3).tolist()
    example = pd.DataFrame({prepared.text_column: examples})
    signature = infer_signature(example, Predictor.load(model_dir).predict_frame(example))
    with active_run(run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVING_MODEL_FILE),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(Path(finetune_core.__file__).parent)],
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
        )
    get_run_logger().info("logged model %s", info.model_uri)
    return info.model_uri


@task(name="register-model", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def register_model(config: FinetuneConfig, model_uri: str, run_id: str, tags: dict[str, str]) -> RegisteredVersion:
    """Register the logged model; idempotent per run, so a retry never registers twice."""
    client, name = MlflowClient(), config.mlflow.registered_model
    existing = [v for v in _versions_of(client, name) if v.run_id == run_id]
    if existing:
        model_version = existing[0]
    else:
        model_version = mlflow.register_model(model_uri, name, tags=tags)
    get_run_logger().info("registered %s version %s", name, model_version.version)
    return RegisteredVersion(
        name=name,
        version=str(model_version.version),
        model_uri=model_uri,
        registry_uri=f"models:/{name}/{model_version.version}",
    )


def _versions_of(client: MlflowClient, name: str):
    try:
        return client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
