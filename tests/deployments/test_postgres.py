"""Production backends: MLflow tracking and the Prefect server both on PostgreSQL (a real
server this test initialises and starts from the Debian packages, which `make test` installs
where apt-get can: Prefect's schema needs the pg_trgm extension, which the `pgserver` wheel
lacks), one `finetune run` against them. Where the binaries are absent it fails under CI and is
skipped, naming the reason, elsewhere. tests/flows/test_postgres_store.py runs MLflow's store on
PostgreSQL from the `pgserver` wheel, everywhere."""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import tiny_config
from tests.servers import free_port, start, stop

BIN = Path(sys.executable).parent


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its commands as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run the PostgreSQL server as")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="module")
def postgres():
    pg_bin = _pg_bin()
    if pg_bin is None:
        missing = "PostgreSQL server binaries not found (Debian: apt-get install postgresql postgresql-contrib)"
        pytest.fail(missing) if os.environ.get("CI") else pytest.skip(missing)
    prefix = _as_postgres_user()
    # pytest's temporary directories are private to root: the server's own directory lives in /tmp
    root = Path(tempfile.mkdtemp(prefix="finetune-postgres-"))
    if prefix:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run(
        [*prefix, str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "finetune"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [
            *prefix,
            str(pg_bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "postgres.log"),
            "-w",
            "-o",
            f"-p {port} -k {root} -h 127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        for database in ("mlflow", "prefect"):
            subprocess.run(
                [
                    str(pg_bin / "psql"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "finetune",
                    "-d",
                    "postgres",
                    "-c",
                    f"create database {database}",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        yield f"finetune@127.0.0.1:{port}", pg_bin
    finally:
        subprocess.run(
            [*prefix, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True, timeout=120
        )
        shutil.rmtree(root, ignore_errors=True)


def test_finetune_run_against_mlflow_and_prefect_on_postgresql(postgres, tiny_backbone, sst2_small, tmp_path):
    where, pg_bin = postgres
    mlflow_port, prefect_port = free_port(), free_port()
    mlflow_url, prefect_api = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}/api"
    mlflow_server = start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"postgresql+psycopg2://{where}/mlflow",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        ],
        f"{mlflow_url}/health",
        tmp_path / "mlflow.log",
    )
    prefect_env = {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{where}/prefect",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    prefect_server = None
    try:  # a Prefect server that fails to start must not leave the MLflow server running
        prefect_server = start(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            f"{prefect_api}/health",
            tmp_path / "prefect.log",
            env=prefect_env,
        )
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(tiny_config(tiny_backbone, sst2_small, mlflow_url, tmp_path)))
        env = {**os.environ, **prefect_env, "MLFLOW_TRACKING_URI": mlflow_url}
        result = subprocess.run(
            [str(BIN / "finetune"), "run", str(config)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        client = MlflowClient(mlflow_url)
        assert client.get_model_version_by_alias("tiny-model", "champion").version == "1"
        rows = subprocess.run(
            [
                str(pg_bin / "psql"),
                "-h",
                where.split("@")[1].split(":")[0],
                "-p",
                where.rsplit(":", 1)[1],
                "-U",
                "finetune",
                "-d",
                "mlflow",
                "-tAc",
                "select count(*) from model_versions",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert rows.stdout.strip() == "1"  # the registry really lives in PostgreSQL
        request = urllib.request.Request(
            f"{prefect_api}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            runs = json.loads(response.read())
        assert any(r["name"] and r["state_type"] == "COMPLETED" for r in runs)
    finally:
        stop(mlflow_server)
        if prefect_server is not None:
            stop(prefect_server)
