"""Environment defaults, set in one place: every entry point (the CLI, the flows, the tests)
calls ``apply_defaults`` before third-party libraries read their settings.

Only quiet, offline-friendly defaults: no analytics or telemetry calls (Prefect's server tries
to send telemetry and logs an ERROR for each attempt it cannot make; Great Expectations sends
usage statistics), no tokenizers fork warnings, no MLflow progress bars in logs. An explicit
value in the environment always wins. Hub access is not switched off here: a user with a
network loads hub ids; ``offline=True`` (the tests, the demo) adds ``HF_HUB_OFFLINE=1``.

MLflow's HTTP retries are bounded tighter than its defaults (7 retries, backoff factor 2, 120 s
timeout: about 4 minutes of silence against a closed port, over 10 against a hung server):
4 retries with 0 + 2 + 4 + 8 s of backoff, plus up to 1 s of jitter each, report an unreachable
tracking server after about 16 s (measured against a closed port: 15.7 s) and still ride out a
server restart of a few seconds mid-run. The 30 s timeout is per read, not per upload.
"""

from __future__ import annotations

import os

from finetune_core.redaction import install_log_redaction

DEFAULTS = {
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow reads DO_NOT_TRACK only as "true". Its telemetry thread, failing to reach its server
    # offline, removed an environment variable while a request iterated os.environ: a KeyError
    # ('_MLFLOW_TELEMETRY_SESSION_ID') failed an MLflow call mid-run.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # Ray (launcher ray) reports usage statistics from every cluster it starts; its dashboard has no
    # environment switch, so the launcher starts local clusters with include_dashboard=False
    "RAY_USAGE_STATS_ENABLED": "0",
}
OFFLINE = {"HF_HUB_OFFLINE": "1"}


def apply_defaults(offline: bool = False) -> None:
    """Set the defaults above, and mask secrets in every log record of this process from now on
    (finetune_core/redaction.py)."""
    for key, value in {**DEFAULTS, **(OFFLINE if offline else {})}.items():
        os.environ.setdefault(key, value)
    install_log_redaction()
