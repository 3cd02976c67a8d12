"""`finetune run` without PREFECT_API_URL, as `make demo` runs it: the command starts Prefect's
temporary server before its heavy imports, and the flow uses that one server (no second start)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_config

pytestmark = pytest.mark.integration  # starts a Prefect server (not through a server fixture)


def test_without_an_api_url_one_temporary_server_started_early_serves_the_run(tiny_backbone, sst2_small, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # a Prefect home of its own (its database created first, as a user's first run would), and
    # room for a busy test machine to start the server
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    prefect = Path(sys.executable).with_name("prefect")
    subprocess.run(
        [str(prefect), "server", "database", "upgrade", "-y"], env=env, check=True, capture_output=True, timeout=300
    )
    config = tiny_config(tiny_backbone, sst2_small, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    script = Path(sys.executable).with_name("finetune")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    done = subprocess.run(
        [*command, "run", str(tmp_path / "config.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 3), done.stderr  # registered (3: the tiny model may fail a gate)
    assert done.stderr.count("Started temporary server on") == 1, done.stderr
    assert "Starting temporary server" not in done.stderr  # the flow did not start a second one
    assert done.stderr.count("Stopping temporary server") == 1
