"""Credentials never leave the environment: `finetune run` against a real `mlflow server` that
needs them (MLflow's basic-auth app), with the credentials in the environment or in the URI. The
run registers; afterwards the whole MLflow store (database and artifacts), the run directory, the
CLI's output, the summary file and the Prefect flow run (parameters and logs) hold no secret.
Wrong or missing credentials: one line naming the store, exit 2, nothing started."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import tiny_config
from tests.servers import start_mlflow_server, stop

SECRET = "Sup3r-S3cret-pw-4711"
HF_SECRET = "hf_FakeGatedModelToken0042"
COMMAND = [str(Path(sys.executable).with_name("finetune"))]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-auth")
    url, process = start_mlflow_server(root, admin_password=SECRET)
    yield url, root
    stop(process)


def _run(tmp_path: Path, prefect_server: str, config: dict, env: dict[str, str], *args: str):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env = {**clean, "PREFECT_API_URL": prefect_server, "HF_TOKEN": HF_SECRET, **env}
    return subprocess.run(
        [*COMMAND, "run", "config.yaml", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _files_holding(root: Path, secrets: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and path.name not in skip:
            data = path.read_bytes()
            found += [f"{path}: {s[:4]}..." for s in secrets if s.encode() in data]
    return found


async def _prefect_record(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return repr(flow_run.parameters) + "\n".join(log.message for log in logs)


def _assert_nothing_recorded(result, tmp_path: Path, server_root: Path, url: str) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    secrets = (SECRET, HF_SECRET)
    client = MlflowClient(url)
    (version,) = client.search_model_versions("name = 'tiny-model'", max_results=10)[-1:]
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert not any(s in repr(run.data.params) + repr(run.data.tags) + version.description for s in secrets)
    assert _files_holding(server_root, secrets, skip=("basic_auth.ini",)) == []  # database + artifacts
    assert _files_holding(tmp_path / "runs", secrets) == []
    assert not any(s in result.stdout + result.stderr for s in secrets)
    assert not any(s in (tmp_path / "summary.json").read_text() for s in secrets)
    prefect_side = asyncio.run(_prefect_record(run.data.tags["prefect.flow_run_id"]))
    assert "registered tiny-model version" in prefect_side  # the logs were read
    assert not any(s in prefect_side for s in secrets)


def test_credentials_from_the_environment_register_and_are_recorded_nowhere(
    auth_server, prefect_server, tiny_backbone, sst2_small, tmp_path, monkeypatch
):
    url, server_root = auth_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # for this test's own client
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    config = tiny_config(tiny_backbone, sst2_small, url, tmp_path)
    del config["mlflow"]["tracking_uri"]
    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": SECRET}
    result = _run(tmp_path, prefect_server, config, env, "--summary-json", "summary.json")
    _assert_nothing_recorded(result, tmp_path, server_root, url)


def test_credentials_in_the_configured_uri_register_and_are_shown_redacted(
    auth_server, prefect_server, tiny_backbone, sst2_small, tmp_path, monkeypatch
):
    url, server_root = auth_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    with_password = url.replace("http://", f"http://admin:{SECRET}@")
    config = tiny_config(tiny_backbone, sst2_small, with_password, tmp_path, mlflow={"registered_model": "tiny-uri"})
    result = _run(tmp_path, prefect_server, config, {}, "--summary-json", "summary.json")
    assert result.returncode == 0, result.stdout + result.stderr
    (version,) = MlflowClient(url).search_model_versions("name = 'tiny-uri'")
    params = MlflowClient(url).get_run(version.run_id).data.params
    assert params["mlflow.tracking_uri"] == url.replace("http://", "http://admin:***@")
    assert "admin:***@" in (tmp_path / "summary.json").read_text()
    assert _files_holding(server_root, (SECRET,), skip=("basic_auth.ini",)) == []
    assert _files_holding(tmp_path / "runs", (SECRET,)) == []
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "credentials",
    [{"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "wrong-password-123"}, {}],
    ids=["wrong", "missing"],
)
def test_refused_credentials_are_one_line_and_exit_2(
    auth_server, prefect_server, tiny_backbone, sst2_small, tmp_path, credentials
):
    url, _ = auth_server
    config = tiny_config(tiny_backbone, sst2_small, url, tmp_path)
    result = _run(tmp_path, prefect_server, config, credentials)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"MLflow tracking store {url} refused the credentials (HTTP 401)" in result.stderr
    assert "Traceback" not in result.stderr and "wrong-password-123" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_the_registry_commands_name_refused_credentials_too(auth_server, tmp_path):
    url, _ = auth_server
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="wrong-password-123")
    for command in (["models", "tiny-model"], ["promote", "tiny-model", "1", "--reason", "test"]):
        done = subprocess.run(
            [*COMMAND, *command, "--tracking-uri", url],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "refused the credentials (HTTP 401)" in done.stderr and "Traceback" not in done.stderr
