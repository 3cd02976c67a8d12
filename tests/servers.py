"""Start and stop real servers (MLflow, Prefect, model serving) as subprocesses on free ports."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} did not start:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def start(command: list[str], url: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    handle = log.open("w")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    wait_for(url, process, log)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def start_mlflow_server(
    root: Path, port: int | None = None, admin_password: str | None = None
) -> tuple[str, subprocess.Popen]:
    """`mlflow server` with a SQLite backend and a local artifact root, on ``port`` (default: a free one).
    ``admin_password``: with MLflow's basic-auth app, whose user `admin` has that password."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    auth, env = [], {}
    if admin_password is not None:
        config = root / "basic_auth.ini"
        config.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
            f"admin_username = admin\nadmin_password = {admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        auth = ["--app-name", "basic-auth"]
        env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}
    process = start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            *auth,
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        f"{url}/health",
        root / "mlflow-server.log",
        env=env,
    )
    return url, process
