"""Which MLflow store a command talks to, decided in one place for every entry point.

Order: the configuration (`mlflow.tracking_uri`, or `--set mlflow.tracking_uri=...`, or a
command's `--tracking-uri`), then the environment variable `MLFLOW_TRACKING_URI` (what the
Docker and Kubernetes job templates set), then `sqlite:///mlflow.db` in the working directory.
`finetune run`, the flows and `finetune models`/`promote`/`predict` all resolve through here,
so they never look in different stores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

from finetune_core.redaction import redact_uri

if TYPE_CHECKING:  # only for the annotation: the config package imports nothing from here
    from finetune_core.config.finetune import FinetuneConfig

ENV_VAR = "MLFLOW_TRACKING_URI"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``explicit`` (config or command-line option) → ``MLFLOW_TRACKING_URI`` → ``sqlite:///mlflow.db``.
    Blank values count as unset (an empty variable in a job template means "not given")."""
    if explicit and explicit.strip():
        return explicit.strip()
    from_env = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return from_env.strip() or DEFAULT_TRACKING_URI


def credentials_to_environment(
    config: FinetuneConfig, environ: MutableMapping[str, str] | None = None
) -> FinetuneConfig:
    """A configured URI that carries credentials moves into ``MLFLOW_TRACKING_URI`` of this process,
    and the configuration handed on leaves it unset: a flow's parameters are recorded by Prefect
    in full, the environment is not. Resolving it again (``with_resolved_tracking``) gives the same
    store; the fingerprint leaves the URI out, so the run's identity does not change."""
    uri = config.mlflow.tracking_uri
    if not uri or redact_uri(uri) == uri:
        return config
    (os.environ if environ is None else environ)[ENV_VAR] = uri.strip()
    return config.model_copy(update={"mlflow": config.mlflow.model_copy(update={"tracking_uri": None})})


def with_resolved_tracking(config: FinetuneConfig, environ: Mapping[str, str] | None = None) -> FinetuneConfig:
    """``config`` with ``mlflow.tracking_uri`` set to the resolved store, so everything after the
    flow's entry (logged params, ``config.yaml``, links, the summary) names the store it used.
    The configuration's fingerprint leaves the tracking URI out, so resolving never changes it."""
    resolved = resolve_tracking_uri(config.mlflow.tracking_uri, environ)
    if resolved == config.mlflow.tracking_uri:
        return config
    return config.model_copy(update={"mlflow": config.mlflow.model_copy(update={"tracking_uri": resolved})})
