"""The Docker and Kubernetes job templates name the MLflow store only through the environment
(`MLFLOW_TRACKING_URI`). Rendered as a work pool renders them, with the store pointed at a real
`mlflow server`, that environment alone sends `finetune run` (no `mlflow` section in the
configuration) and `finetune models` to that server, and nothing to ./mlflow.db."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.datasets import easy_sentiment

REPO = Path(__file__).resolve().parents[2]
FINETUNE = Path(sys.executable).with_name("finetune")


def _docker_environment(store: str) -> dict[str, str]:
    """The Docker template's `env` job variable: its default, with the store an operator sets."""
    from prefect.utilities.templating import apply_values

    template = json.loads((REPO / "deployments" / "docker-job-template.json").read_text())
    default = template["variables"]["properties"]["env"]["default"]
    assert set(default) == {"MLFLOW_TRACKING_URI"} and default["MLFLOW_TRACKING_URI"].startswith("http")
    rendered = apply_values(template["job_configuration"], {"env": {**default, "MLFLOW_TRACKING_URI": store}})
    return rendered["env"]


def _kubernetes_environment(store: str) -> dict[str, str]:
    """The Kubernetes template's container `env`, rendered with its `mlflow_tracking_uri` variable."""
    from prefect.utilities.templating import apply_values

    template = yaml.safe_load((REPO / "deployments" / "kubernetes-job-template.yaml").read_text())
    values = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    assert values["mlflow_tracking_uri"].startswith("http")
    values.update(mlflow_tracking_uri=store, command="finetune run", name="finetune", env={}, labels={})
    rendered = apply_values(template["job_configuration"], values)
    container = rendered["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    return {entry["name"]: entry["value"] for entry in container["env"] if "value" in entry}


@pytest.mark.parametrize("render", [_docker_environment, _kubernetes_environment], ids=["docker", "kubernetes"])
def test_each_template_names_the_store_by_the_environment_variable_only(render):
    assert render("http://mlflow.test:5000") == {"MLFLOW_TRACKING_URI": "http://mlflow.test:5000"}


def test_the_job_template_environment_alone_chooses_the_store(prefect_server, mlflow_server, tiny_backbone, tmp_path):
    easy_sentiment(120, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(40, 1).to_csv(tmp_path / "test.csv", index=False)
    config = {  # no tracking URI in the configuration: the store is the job's business
        "data": {"train": "train.csv", "test": "test.csv"},
        "backbone": {"candidates": [str(tiny_backbone)]},
        "training": {"frozen": {"epochs": 1}, "unfrozen": {"epochs": 1}, "batch_size": 16, "max_length": 16},
        "mlflow": {"registered_model": "templated"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    base["PREFECT_API_URL"] = prefect_server

    def finetune(job_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(FINETUNE), *args], cwd=tmp_path, env={**base, **job_env}, capture_output=True, text=True, timeout=600
        )

    done = finetune(_docker_environment(mlflow_server), "run", "config.yaml", "--summary-json", "summary.json")
    assert done.returncode in (0, 3), done.stderr[-3000:]  # registered either way (3: gated out)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tracking_uri"] == mlflow_server
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    client = MlflowClient(mlflow_server)
    assert client.get_run(summary["mlflow_run_id"]).info.status == "FINISHED"
    assert [str(v.version) for v in client.search_model_versions("name = 'templated'")] == ["1"]

    # a job on the Kubernetes pool finds the same store: the registry command lists that run
    listed = finetune(_kubernetes_environment(mlflow_server), "models", "templated", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [v["run_id"] for v in json.loads(listed.stdout)["versions"]] == [summary["mlflow_run_id"]]
