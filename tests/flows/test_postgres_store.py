"""MLflow's tracking store on PostgreSQL from the project's own install: the server binaries come
with the `pgserver` package (a test dependency), so this runs on every machine, a CI runner's too.
The server takes passwords only (scram-sha-256 on its socket).

- `finetune run` straight against a PostgreSQL tracking store whose URI carries the password: it
  registers, and the password is nowhere in the database, the run directory or the output.
- A wrong password: one line naming the store (redacted), exit 2, nothing started.

tests/deployments/test_postgres.py puts the Prefect server on PostgreSQL too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
import yaml

from tests.conftest import tiny_config

BIN = Path(sys.executable).parent
PASSWORD = "Pg5ecretPassw0rd"


@dataclass
class Postgres:
    socket_dir: str
    bin: Path

    def uri(self, database: str, driver: str = "psycopg2", password: str = PASSWORD) -> str:
        return f"postgresql+{driver}://postgres:{password}@/{database}?host={self.socket_dir}"


@pytest.fixture(scope="module")
def postgres():
    import pgserver
    from pgserver._commands import POSTGRES_BIN_PATH

    root = Path(tempfile.mkdtemp(prefix="finetune-postgres-"))  # pytest's tmp dirs are private to root
    server = pgserver.get_server(root / "data", cleanup_mode="stop")  # as a non-root user when run as root
    try:
        for database in ("mlflow", "prefect", "direct"):
            server.psql(f"create database {database};")
        server.psql(f"alter user postgres password '{PASSWORD}';")
        (root / "data" / "pg_hba.conf").write_text("local all all scram-sha-256\n")  # passwords only from now on
        server.psql("select pg_reload_conf();")
        socket_dir = server.get_uri().split("host=", 1)[1]
        yield Postgres(socket_dir=socket_dir, bin=POSTGRES_BIN_PATH)
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _count(uri: str, table: str) -> int:
    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(f"select count(*) from {table}")).scalar_one()
    finally:
        engine.dispose()


def _finetune(tmp_path: Path, config: dict, env: dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(
        [str(BIN / "finetune"), "run", "config.yaml"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_postgresql_store_with_a_password_in_its_uri_registers_and_records_no_password(
    postgres, prefect_server, tiny_backbone, sst2_small, tmp_path
):
    store = postgres.uri("direct")
    config = tiny_config(tiny_backbone, sst2_small, store, tmp_path)
    result = _finetune(tmp_path, config, {"PREFECT_API_URL": prefect_server})
    assert result.returncode == 0, result.stderr[-3000:]
    assert _count(store, "model_versions") == 1
    dump = subprocess.run(
        [str(postgres.bin / "pg_dump"), "-h", postgres.socket_dir, "-U", "postgres", "direct"],
        env={**os.environ, "PGPASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "postgres:***@/direct" in dump  # the logged parameter names the store, redacted
    assert PASSWORD not in dump
    assert PASSWORD not in result.stdout + result.stderr
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]


def test_a_wrong_database_password_is_one_line_and_exit_2(
    postgres, prefect_server, tiny_backbone, sst2_small, tmp_path
):
    store = postgres.uri("direct", password="not-the-password")
    config = tiny_config(tiny_backbone, sst2_small, store, tmp_path)
    result = _finetune(tmp_path, config, {"PREFECT_API_URL": prefect_server})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MLflow tracking store postgresql+psycopg2://postgres:***@/direct" in result.stderr
    assert "refused the credentials" in result.stderr and "Traceback" not in result.stderr
    assert "not-the-password" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()
