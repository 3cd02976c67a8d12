"""`finetune promote` and `finetune models`: the registry from the command line. Both find the
store the way `finetune run` does (finetune_core.config.tracking)."""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime, timezone

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.errors import print_error

console = Console(stderr=True)
_TRACKING_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    from finetune_core.config.tracking import resolve_tracking_uri
    from finetune_core.errors import UserInputError
    from tasks.mlflow_io.tracking_server import TrackingUnavailable, require_tracking_server

    uri = resolve_tracking_uri(tracking_uri)
    try:
        require_tracking_server(uri)  # refused credentials (exit 2) or a store that is down (exit 4), named
    except (UserInputError, TrackingUnavailable) as exc:
        print_error(console, exc)
        raise typer.Exit(getattr(exc, "exit_code", 2)) from None
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
    from tasks.mlflow_io.registry_lookups import alias_version

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


def _created(version) -> str:
    return datetime.fromtimestamp(version.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds")


def _headline_metrics(client, version) -> dict[str, float]:
    """The task's headline test metrics (accuracy, macro-F1, ...) of the version's run."""
    from finetune_core.metric_table import headline

    run_metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    return {m: run_metrics["test/" + m] for m in headline(version.tags.get("task")) if "test/" + m in run_metrics}


def registry_listing(client, name: str) -> dict:
    """The registered model as plain data: aliases, then each version (newest first) with its
    aliases, tags and headline test metrics. ``models --json`` prints it; the table shows it."""
    registered = client.get_registered_model(name)
    aliases = {alias: str(version) for alias, version in (registered.aliases or {}).items()}
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version), reverse=True)
    return {
        "name": name,
        "aliases": aliases,
        "versions": [
            {
                "version": str(v.version),
                "aliases": sorted(a for a, target in aliases.items() if target == str(v.version)),
                "created": _created(v),
                "run_id": v.run_id,
                "source": v.source,
                "status": v.status,
                "tags": dict(v.tags),
                "metrics": _headline_metrics(client, v),
            }
            for v in versions
        ],
    }


def models(
    name: str = typer.Argument(..., help="Registered model name."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=_TRACKING_HELP),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON (aliases; versions with aliases, tags, test metrics) instead of a table."
    ),
) -> None:
    """Versions with aliases, key test metrics, data fingerprint and gate verdict."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        console.print(f"[bold red]error:[/] no registered model {name!r}", highlight=False)
        raise typer.Exit(2) from None
    listing = registry_listing(client, name)
    if as_json:
        typer.echo(json.dumps(listing, indent=2))
        return
    table = Table(title=name)
    for column in ("version", "aliases", "metrics (test)", "data fingerprint", "gate", "created"):
        table.add_column(column)
    for v in listing["versions"]:
        table.add_row(
            v["version"],
            ", ".join(v["aliases"]),
            ", ".join(f"{m} {value:.4f}" for m, value in v["metrics"].items()),
            v["tags"].get("data_fingerprint", ""),
            v["tags"].get("gate", ""),
            v["created"][:16].replace("T", " "),
        )
    Console(width=160).print(table)
