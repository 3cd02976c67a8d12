"""The MLflow tracking server as a dependency of a run: checked before the run starts, and an
outage during the run reported as one error that names the server.

MLflow's own errors for a server that is down are a page of urllib3 retry text naming an API
path; a user needs the URI they configured and what to do. Only http(s) URIs are servers;
a SQLite or file store is local and never checked. Retries are MLflow's, bounded in
``finetune_core.environment`` (about 15 s against a closed port).
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


class TrackingUnavailable(Exception):
    """The MLflow tracking server does not answer; the message names its URI. CLI exit code 4."""

    exit_code = 4


def is_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme in ("http", "https")


def unreachable_reason(tracking_uri: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at ``tracking_uri`` (e.g. "[Errno 111] Connection refused"), or None
    when something does: any HTTP response, an error status included, means the server is up."""
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except OSError as exc:  # a timeout or a reset connection
        return str(exc) or type(exc).__name__


def _retries() -> str:
    return os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLflow's default number of")


def require_tracking_server(tracking_uri: str) -> None:
    """Before a run starts: the server answers MLflow's API (after MLflow's bounded retries), or
    ``TrackingUnavailable`` names it."""
    if not is_server(tracking_uri):
        return
    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except MlflowException as exc:
        reason = unreachable_reason(tracking_uri)
        if reason is None:  # it answers, so the failure is something else (auth, a proxy): MLflow's words
            raise
        raise TrackingUnavailable(
            f"MLflow tracking server {tracking_uri} is unreachable ({reason}, after {_retries()} retries); "
            "nothing was started. Start it, or set mlflow.tracking_uri or MLFLOW_TRACKING_URI to a server that runs."
        ) from exc


def naming_tracking_outages(pipeline):
    """Decorate ``pipeline(config, ...)``: an error raised while the configured tracking server
    has stopped answering becomes ``TrackingUnavailable`` naming it (the run could not be marked
    FAILED either: MLflow shows it RUNNING). Errors with the server up pass through unchanged."""

    @functools.wraps(pipeline)
    def run(config, *args, **kwargs):
        tracking_uri = config.mlflow.tracking_uri
        try:
            return pipeline(config, *args, **kwargs)
        except TrackingUnavailable:
            raise
        except Exception as exc:
            reason = unreachable_reason(tracking_uri) if is_server(tracking_uri) else None
            if reason is None:
                raise
            raise TrackingUnavailable(
                f"MLflow tracking server {tracking_uri} stopped answering during the run ({reason}, after "
                f"{_retries()} retries). Run the same command again once it answers."
            ) from exc

    return run
