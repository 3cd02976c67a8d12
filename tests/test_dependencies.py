"""Dependencies stated once and consistently: every third-party package the code imports is
declared, nothing declared goes unimported, each runtime dependency has a tested lower bound
and a cap, and constraints.txt (what `make` and the Dockerfile install from) pins versions
inside those bounds and resolves with the project, offline."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("finetune_core", "tasks", "flows")  # what the wheel holds (tests and bench are not shipped)
OWN = set(SHIPPED)
OPTIONAL = {"prefect_dask": "dask", "prefect_ray": "ray", "ray": "ray-train"}  # imported only when that extra is chosen


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in project()["dependencies"]]


def imported_distributions() -> dict[str, set[str]]:
    """Each third-party module the shipped code imports (functions included) -> the installed
    distributions providing it (mlflow's modules come from `mlflow` and `mlflow-skinny`)."""
    modules = set()
    for folder in SHIPPED:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - OWN - set(OPTIONAL)
    owners = packages_distributions()
    missing = sorted(m for m in third_party if m not in owners)
    assert not missing, f"modules no installed distribution provides: {missing}"
    return {m: {canonicalize_name(d) for d in owners[m]} for m in third_party}


def test_every_imported_package_is_declared_and_every_declared_one_imported():
    declared = {canonicalize_name(r.name) for r in runtime_requirements()}
    imported = imported_distributions()
    assert sorted(m for m, owners in imported.items() if not owners & declared) == [], "imported, not declared"
    assert declared - set().union(*imported.values()) == set(), "declared but never imported"
    extras = project()["optional-dependencies"]
    for module, extra in OPTIONAL.items():
        assert any(canonicalize_name(Requirement(r).name) == canonicalize_name(module) for r in extras[extra])


def test_every_dependency_has_a_lower_bound_and_a_cap():
    extras = [Requirement(r) for group in project()["optional-dependencies"].values() for r in group]
    for requirement in runtime_requirements() + extras:
        operators = {spec.operator for spec in requirement.specifier}
        assert operators == {">=", "<"}, f"{requirement}: state a lower bound and a cap"


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[0-9][0-9A-Za-z.!]*", version), f"not an exact public pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_runtime_dependency_inside_its_bounds():
    pins = constraints()
    assert "finetune-pipeline" not in pins and "torch" not in pins  # torch: installed first, from its own index
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(Version(pins[name])), f"{name}=={pins[name]} outside {requirement}"


def test_the_project_resolves_with_the_constraints_offline():
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation"]
        + ["-c", "constraints.txt", "-e", ".[bundled,dev]"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Would install finetune-pipeline" in done.stdout
