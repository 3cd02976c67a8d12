"""The Prefect API a command-line run talks to, ready by the time its flow starts.

With an API configured (``PREFECT_API_URL`` in the environment or the Prefect profile: a running
``prefect server``, a deployment's worker) that server is used and nothing starts. Without one,
Prefect starts a temporary server at the flow's first API call and waits until it answers (about
10 s on a 2-core machine, most of it the server process importing and migrating its database).
``start_temporary_api`` starts that same server (Prefect's own, which the flow then finds
running) before the command imports torch, MLflow and the pipeline, so it boots on another core
meanwhile; ``wait_for_api`` joins it just before the flow runs. Measured: docs/benchmarks/startup.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

EARLY_START_TIMEOUT_S = 90


def start_temporary_api() -> threading.Thread | None:
    """Start Prefect's temporary API server in the background, unless an API is configured."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    # imported here, in this thread: importing in two threads at once can hand one of them a
    # partially initialised module; the thread below only spawns the server and polls it
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # one per process: the flow's client gets this same server

    # this start competes for the CPU with the command's own imports (the flow's later start does
    # not): Prefect's startup timeout (20 s by default) was seen expiring on a loaded 2-core machine
    timeout = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), EARLY_START_TIMEOUT_S)

    def start() -> None:
        try:
            server.start(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 — not the user's problem yet, see below
            # the flow's first API call starts a server again and reports the failure if that one
            # fails too (a traceback from this thread would not); the process that did not answer
            # in time is stopped here, as Prefect leaves it running when it gives up
            logging.getLogger(__name__).debug("early start of the temporary server failed: %s", exc)
            server.stop()

    starting = threading.Thread(target=start, name="prefect-temporary-api", daemon=True)
    starting.start()
    return starting


def wait_for_api(starting: threading.Thread | None, meanwhile: Callable[[], None] | None = None) -> None:
    """Block until the server started above answers (its own timeout applies), running
    ``meanwhile`` first while it boots; say where it is, as Prefect would have (its own line came
    before its logging was set up). A server that failed to start here is started again by the
    flow, which reports why if it fails again. Without a starting server nothing waits, and
    ``meanwhile`` does not run (its work would only move, not overlap)."""
    if starting is None:
        return
    if meanwhile is not None:
        meanwhile()
    starting.join()
    from prefect.server.api.server import SubprocessASGIServer, subprocess_server_logger

    server = SubprocessASGIServer()
    if server.running:
        subprocess_server_logger.info(
            "Started temporary server on %s (set PREFECT_API_URL to use a running server instead)", server.address
        )
