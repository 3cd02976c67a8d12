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
import re
import urllib.error
import urllib.request
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from finetune_core.errors import UserInputError
from finetune_core.redaction import redact_text, redact_uri


class TrackingUnavailable(Exception):
    """The MLflow tracking server does not answer; the message names its URI. CLI exit code 4."""

    exit_code = 4


class TrackingCredentialsRejected(UserInputError):
    """The store answers but refuses the credentials: CLI exit code 2 (fix them; a retry will not help)."""

    def __init__(self, tracking_uri: str, reason: str):
        self.tracking_uri, self.reason = tracking_uri, reason
        super().__init__(
            f"MLflow tracking store {redact_uri(tracking_uri)} refused the credentials ({reason}); nothing was "
            "started. Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a server) or the URI's "
            "user:password (a database) to an account of that store."
        )

    def __reduce__(self):  # picklable across Prefect's task boundary
        return (type(self), (self.tracking_uri, self.reason))


DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mssql")
_AUTH_FAILURE = re.compile(r"authentication failed|no password supplied|access denied|password", re.I)


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
    """Before a run starts: the store answers (a server: MLflow's API after MLflow's bounded retries;
    a database: one connection), or ``TrackingUnavailable`` names it, or
    ``TrackingCredentialsRejected`` says it refused the credentials. Messages show the URI redacted."""
    if is_server(tracking_uri):
        _require_http(tracking_uri)
    elif urlparse(tracking_uri).scheme.split("+")[0] in DATABASE_SCHEMES:
        _require_database(tracking_uri)


def _require_http(tracking_uri: str) -> None:
    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except MlflowException as exc:
        status = _http_status(exc)
        if status in (401, 403):
            raise TrackingCredentialsRejected(tracking_uri, f"HTTP {status}") from None
        reason = unreachable_reason(tracking_uri)
        if reason is None:  # it answers, so the failure is something else (a proxy): MLflow's words
            raise
        raise TrackingUnavailable(
            f"MLflow tracking server {redact_uri(tracking_uri)} is unreachable ({reason}, after {_retries()} "
            "retries); nothing was started. Start it, or set mlflow.tracking_uri or MLFLOW_TRACKING_URI to a "
            "server that runs."
        ) from exc


def _http_status(exc: MlflowException) -> int | None:
    try:
        return int(exc.get_http_status_code())
    except (AttributeError, TypeError, ValueError):
        return None


def _require_database(tracking_uri: str) -> None:
    """One connection, no retries: MLflow's own store retries a refused password for ~100 s."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    connect_args = {"connect_timeout": 10} if tracking_uri.startswith("postgres") else {}
    engine = create_engine(tracking_uri, connect_args=connect_args)
    try:
        with engine.connect():
            return
    except SQLAlchemyError as exc:
        reason = redact_text(str(getattr(exc, "orig", None) or exc)).strip().splitlines()[0]
        if _AUTH_FAILURE.search(reason):
            raise TrackingCredentialsRejected(tracking_uri, reason) from None
        raise TrackingUnavailable(
            f"MLflow tracking database {redact_uri(tracking_uri)} is unreachable ({reason}); nothing was "
            "started. Start it, or set mlflow.tracking_uri or MLFLOW_TRACKING_URI to a database that runs."
        ) from None
    finally:
        engine.dispose()


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
                f"MLflow tracking server {redact_uri(tracking_uri)} stopped answering during the run ({reason}, after "
                f"{_retries()} retries). Run the same command again once it answers."
            ) from exc

    return run
