"""The Prefect API a command-line run talks to, ready by the time its flow starts.

With an API configured (``PREFECT_API_URL`` in the environment or the Prefect profile: a running
``prefect server``, a deployment's worker) that server is used and nothing starts. Without one,
Prefect starts a temporary server at the flow's first API call and waits until it answers (about
10 s on a 2-core machine, most of it the server process importing and migrating its database).
``start_temporary_api`` starts that same server (Prefect's own, which the flow then finds
running) before the command imports torch, MLflow and the pipeline, so it boots on another core
meanwhile; ``wait_for_api`` joins it just before the flow runs. Measured in ``bench/startup.py``.
"""

from __future__ import annotations

import threading


def start_temporary_api() -> threading.Thread | None:
    """Start Prefect's temporary API server in the background, unless an API is configured."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    # imported here, in this thread: importing in two threads at once can hand one of them a
    # partially initialised module; the thread below only spawns the server and polls it
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # one per process: the flow's client gets this same server
    starting = threading.Thread(target=server.start, name="prefect-temporary-api", daemon=True)
    starting.start()
    return starting


def wait_for_api(starting: threading.Thread | None) -> None:
    """Block until the server started above answers (its own timeout applies)."""
    if starting is not None:
        starting.join()
