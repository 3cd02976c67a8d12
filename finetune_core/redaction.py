"""Secrets are never recorded: one place that redacts what the project logs, prints, tags or describes.

Credentials reach a run three ways: in a URI's userinfo (``postgresql://user:PASSWORD@host/db``,
``https://user:TOKEN@host``), in a URI's query (``?password=...``, ``?token=...``), and in the
environment (``MLFLOW_TRACKING_PASSWORD``, ``HF_TOKEN``, ...). ``redact_uri`` masks the first two
and keeps enough to recognise the store (``postgresql://user:***@host/db``); ``redact_text`` masks
URIs inside free text (error messages, log lines, tracebacks) and the values of the secret
environment variables wherever they appear. ``store_digest`` identifies a store without storing it
(the resume check compares digests of the full URIs). See docs/concepts/security.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose value is a credential (matched anywhere in the key, any case).
_SECRET_KEY_WORDS = r"pass(?:word)?|pwd|token|secret|api[-_]?key|access[-_]?key|signature|credential"
SECRET_QUERY_KEY = re.compile(_SECRET_KEY_WORDS, re.I)
# Environment variables whose value is a secret a run may see: MLflow, Hugging Face, clouds, Prefect, PostgreSQL.
SECRET_ENV_VARS = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_API_KEY",
    "DATABRICKS_TOKEN",
    "PREFECT_API_KEY",
    "PGPASSWORD",
)
# A secret shorter than this is not searched for in free text: it would mask ordinary words.
MIN_SECRET_LENGTH = 6
# scheme://user:password@ (password: anything up to the '@' that ends the authority).
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/:@'\"]*):(?P<password>[^\s/@'\"]+)@")
_QUERY_SECRET = re.compile(
    rf"(?P<key>[?&][^\s=&#'\"]*(?:{_SECRET_KEY_WORDS})[^\s=&#'\"]*)=(?P<value>[^\s&#'\"]+)", re.I
)


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its userinfo and every secret query value replaced by ``***``;
    the scheme, user, host, port, path and other parameters stay. Nothing secret (or not a URI):
    returned unchanged, character for character."""
    if not uri or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if has_password else netloc
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(SECRET_QUERY_KEY.search(key) for key, _ in pairs):
        query = urlencode([(k, MASK if SECRET_QUERY_KEY.search(k) else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return uri
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def without_credentials(uri: str) -> str:
    """``uri`` with no userinfo at all: for links a reviewer clicks (a masked password would not work)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else uri


def secret_values(environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> list[str]:
    """The values to mask wherever they appear: the secret environment variables' and ``extra``."""
    env = os.environ if environ is None else environ
    found = [env.get(name, "") for name in SECRET_ENV_VARS] + list(extra)
    return sorted({v for v in found if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def redact_text(text: str, environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> str:
    """``text`` with every URI's password and secret query values, and every secret value from the
    environment (and ``extra``), replaced by ``***``."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['key']}={MASK}", text)
    for value in secret_values(environ, extra):
        text = text.replace(value, MASK)
    return text


def redact_values(node):
    """``node`` (JSON-like: dicts, lists, strings, numbers) with ``redact_text`` applied to every string."""
    if isinstance(node, str):
        return redact_text(node)
    if isinstance(node, dict):
        return {key: redact_values(value) for key, value in node.items()}
    if isinstance(node, list):
        return [redact_values(value) for value in node]
    return node


def store_digest(uri: str) -> str:
    """A stable identifier of a store that reveals nothing of its credentials."""
    return "sha256:" + hashlib.sha256(uri.encode("utf-8")).hexdigest()


def _redacted(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: leave it to the handler to report
        return record
    redacted = redact_text(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    if record.exc_info and record.exc_info[1] is not None:  # handlers print exc_text when it is set
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
    return record


def install_log_redaction() -> None:
    """Every log record of this process, from any logger (Prefect's API and console handlers,
    MLflow's, ours), is redacted when it is created. Idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts_secrets", False):
        return

    def redacting_factory(*args, **kwargs) -> logging.LogRecord:
        return _redacted(factory(*args, **kwargs))

    redacting_factory.redacts_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)
