"""Registry lookups shared by the flows, the tasks and the `finetune models`/`promote` commands
(plain MLflow client calls, no Prefect)."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION, CHALLENGER = "champion", "challenger"


def alias_version(client: MlflowClient, name: str, alias: str):
    """The model version an alias points at, or None (no such model, or the alias is unset)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def versions_of(client: MlflowClient, name: str):
    """Every version of a registered model; none when it is not registered yet."""
    try:
        return client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
