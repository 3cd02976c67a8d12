"""A real `prefect server` process for deployment tests (a worker runs flows against it)."""

import os
import sys
from pathlib import Path

import pytest

from tests.servers import free_port, start, stop

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def prefect_server_process(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_KEY", None)
    process = start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        f"http://127.0.0.1:{port}/api/health",
        home / "server.log",
        env=env,
    )
    yield env
    stop(process)
