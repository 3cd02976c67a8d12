"""Environment defaults, set in one place: every entry point (the CLI, the flows, the tests)
calls ``apply_defaults`` before third-party libraries read their settings.

Only quiet, offline-friendly defaults: no analytics or telemetry calls (Prefect's server tries
to send telemetry and logs an ERROR for each attempt it cannot make; Great Expectations sends
usage statistics), no tokenizers fork warnings, no MLflow progress bars in logs. An explicit
value in the environment always wins. Hub access is not switched off here: a user with a
network loads hub ids; ``offline=True`` (the tests, the demo) adds ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
OFFLINE = {"HF_HUB_OFFLINE": "1"}


def apply_defaults(offline: bool = False) -> None:
    for key, value in {**DEFAULTS, **(OFFLINE if offline else {})}.items():
        os.environ.setdefault(key, value)
