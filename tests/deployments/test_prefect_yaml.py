"""prefect.yaml stays loadable: entrypoints import, parameters validate against the flow's model."""

from importlib import import_module
from pathlib import Path

import yaml
from prefect import Flow

from finetune_core.config.finetune import FinetuneConfig

REPO = Path(__file__).resolve().parents[2]


def test_deployments_point_at_flows_with_valid_parameters():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert spec["deployments"], "no deployments declared"
    for deployment in spec["deployments"]:
        path, _, function = deployment["entrypoint"].partition(":")
        flow = getattr(import_module(path.removesuffix(".py").replace("/", ".")), function)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        assert deployment["enforce_parameter_schema"] is True
        validated = flow.validate_parameters(deployment["parameters"])  # what a flow run does first
        config = validated["config"]
        assert isinstance(config, FinetuneConfig)
        for split in ("train", "test"):
            assert (REPO / getattr(config.data, split)).is_file()
        assert deployment["work_pool"]["name"] == "finetune-process"


def test_nightly_retrain_is_scheduled_and_work_pool_templates_parse():
    import json

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    retrain = next(d for d in spec["deployments"] if d["name"] == "nightly-retrain")
    assert retrain["entrypoint"] == "flows/retrain.py:retrain"
    assert retrain["schedules"] == [{"cron": "0 2 * * *", "timezone": "Europe/Paris", "active": True}]
    docker = json.loads((REPO / "deployments" / "docker-job-template.json").read_text())
    kubernetes = yaml.safe_load((REPO / "deployments" / "kubernetes-job-template.yaml").read_text())
    for template in (docker, kubernetes):
        assert {"job_configuration", "variables"} <= set(template)
        assert "image" in template["variables"]["properties"]


def test_kubernetes_template_renders_a_gpu_job():
    from prefect.utilities.templating import apply_values

    template = yaml.safe_load((REPO / "deployments" / "kubernetes-job-template.yaml").read_text())
    values = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    values.update(command="python -m prefect.engine", name="retrain", env={}, labels={})
    rendered = apply_values(template["job_configuration"], values)
    pod = rendered["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "finetune-pipeline:latest"
    assert (
        container["resources"]["limits"]["nvidia.com/gpu"] == 1
        and container["resources"]["requests"]["memory"] == "16Gi"
    )
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and "{{" not in str(rendered["job_manifest"])
