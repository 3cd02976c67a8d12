"""`finetune promote` and `finetune models`: the registry from the command line."""

from __future__ import annotations

import getpass
import os
from datetime import datetime, timezone

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
_TRACKING_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _version(client, name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException:
        console.print(f"[bold red]error:[/] registered model {name!r} has no version {version!r}", highlight=False)
        raise typer.Exit(2) from None


def promote(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Argument(..., help="Version to make champion (e.g. a rollback target)."),
    reason: str = typer.Option(..., "--reason", help="Why: recorded on the version."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=_TRACKING_HELP),
) -> None:
    """Move the `champion` alias by hand (rollback or override), recording who, when and why."""
    from tasks.registry import alias_version

    client = _client(tracking_uri)
    _version(client, name, version)
    current = alias_version(client, name, "champion")
    previous = str(current.version) if current is not None else None
    client.set_registered_model_alias(name, "champion", version)
    tags = {
        "promoted_by": os.environ.get("FINETUNE_USER") or getpass.getuser(),
        "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "promotion_reason": reason,
        "promotion": "manual",
    }
    if previous is not None and previous != version:
        tags["previous_champion"] = previous
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    console.print(
        f"{name}: champion moved {('from version ' + previous + ' ') if previous else ''}to version {version}",
        highlight=False,
    )


def models(
    name: str = typer.Argument(..., help="Registered model name."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=_TRACKING_HELP),
) -> None:
    """Versions with aliases, key test metrics, data fingerprint and gate verdict."""
    from finetune_core.evaluation.metric_table import headline

    client = _client(tracking_uri)
    try:
        registered = client.get_registered_model(name)
    except Exception:
        console.print(f"[bold red]error:[/] no registered model {name!r}", highlight=False)
        raise typer.Exit(2) from None
    aliases: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version), reverse=True)
    table = Table(title=name)
    for column in ("version", "aliases", "metrics (test)", "data fingerprint", "gate", "created"):
        table.add_column(column)
    for v in versions:
        run_metrics = client.get_run(v.run_id).data.metrics if v.run_id else {}
        shown = ", ".join(
            f"{m} {run_metrics['test/' + m]:.4f}" for m in headline(v.tags.get("task")) if "test/" + m in run_metrics
        )
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            str(v.version),
            ", ".join(sorted(aliases.get(str(v.version), []))),
            shown,
            v.tags.get("data_fingerprint", ""),
            v.tags.get("gate", ""),
            created,
        )
    Console(width=160).print(table)
