"""The multi-node Kubernetes template (deployments/kubernetes-multinode-job.yaml): rendered as a
Prefect Kubernetes work pool renders it, every field of the Job and of the headless Service is
checked against the Kubernetes API's models (unknown fields and wrong types fail), the pieces of
the c10d rendezvous agree with each other, and the pod script starts the flow on pod 0 and the
stage's torchrun command on the others."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

kubernetes_client = pytest.importorskip("kubernetes.client")

TEMPLATE = Path(__file__).resolve().parents[2] / "deployments" / "kubernetes-multinode-job.yaml"


def _documents() -> tuple[dict, dict]:
    service, template = yaml.safe_load_all(TEMPLATE.read_text())
    return service, template


def _rendered_job(command: str = "prefect flow-run execute") -> dict:
    from prefect.utilities.templating import apply_values

    _, template = _documents()
    values = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    values.update(command=command, name="finetune-nightly", env={}, labels={})
    return apply_values(template["job_configuration"], values)["job_manifest"]


def _check(value, type_name: str, path: str, quantity: bool = False) -> None:
    """``value`` against the Kubernetes client's OpenAPI type name (e.g. V1Job, list[V1EnvVar])."""
    if type_name.startswith("list["):
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            _check(item, type_name[5:-1], f"{path}[{i}]", quantity)
    elif type_name.startswith(("dict(", "dict[")):
        assert isinstance(value, dict), path
        inner = re.fullmatch(r"dict[(\[]str, (.+)[)\]]", type_name).group(1)
        for key, item in value.items():
            _check(item, inner, f"{path}.{key}", quantity or path.endswith(("limits", "requests")))
    elif type_name == "str":  # resource quantities are int-or-string in the API
        assert isinstance(value, str) or (quantity and isinstance(value, int)), f"{path}: {value!r}"
    elif type_name == "int":
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: {value!r}"
    elif type_name == "bool":
        assert isinstance(value, bool), f"{path}: {value!r}"
    elif type_name != "object":  # object: int-or-string fields (ports)
        model = getattr(kubernetes_client, type_name)
        assert isinstance(value, dict), f"{path}: {value!r}"
        fields = {json_name: name for name, json_name in model.attribute_map.items()}
        unknown = set(value) - set(fields)
        assert not unknown, f"{path}: unknown field(s) {sorted(unknown)} for {type_name}"
        for key, item in value.items():
            _check(item, model.openapi_types[fields[key]], f"{path}.{key}", quantity)


def test_the_job_and_the_service_match_the_kubernetes_api():
    service, _ = _documents()
    job = _rendered_job()
    _check(service, "V1Service", "service")
    _check(job, "V1Job", "job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2  # the `nodes` default


def test_the_rendezvous_pieces_agree():
    service, _ = _documents()
    pod = _rendered_job()["spec"]["template"]
    assert service["spec"]["clusterIP"] == "None"  # headless: per-pod DNS names
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FINETUNE_RDZV_ENDPOINT"] == f"$(JOB_NAME)-0.{service['metadata']['name']}:29400"
    assert {p["containerPort"] for p in container["ports"]} == {p["port"] for p in service["spec"]["ports"]}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_pod_0_runs_the_flow_and_the_others_run_the_stage_command(tmp_path):
    script = _rendered_job("echo flow-run")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    run_dir = tmp_path / "runs" / "20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "model.torchrun.command").write_text("echo joined --rdzv-id=nightly-abc\n")
    (run_dir / "other.torchrun.command").write_text("echo wrong --rdzv-id=another-job\n")
    env = {"PATH": "/usr/bin:/bin", "JOB_NAME": "nightly-abc", "FINETUNE_RUNS": str(tmp_path / "runs")}

    def pod(index: int) -> str:
        done = subprocess.run(
            ["/bin/sh", "-c", script],
            env={**env, "JOB_COMPLETION_INDEX": str(index)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert pod(0) == "flow-run"
    assert pod(1) == "joined --rdzv-id=nightly-abc"
