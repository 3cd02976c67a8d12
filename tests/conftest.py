"""Shared fixtures: tiny random backbones, small data files, an isolated MLflow store, and one
Prefect test harness (a real temporary API server) for the whole session."""

from __future__ import annotations

import os

# One torch/OpenMP thread in the tests and every process they start (inherited). Tests run a flow
# process beside a Prefect server, an MLflow server and workers on 2 cores; torch's OpenMP threads
# spin-wait for each other, and when another process holds a core a step of the tiny test models
# took 10x longer with 2 threads than with 1 (80 against 815 samples/s, measured beside a
# benchmark). Speed is not what these tests check; tests/flows/test_fresh_process.py runs the
# installed command with torch's own thread choice, as users get it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from finetune_core.environment import apply_defaults  # noqa: E402

apply_defaults(offline=True)  # the tests never reach a hub
# Frozen-feature cache of this test session, not the user's.
os.environ.setdefault("FINETUNE_CACHE", __import__("tempfile").mkdtemp(prefix="finetune-test-cache-"))

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tests.tiny_models import build_tiny_bert  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Fixtures that start a server: a test using one is an integration test (`make test-fast` skips them).
SERVER_FIXTURES = {"prefect_server", "prefect_server_process", "finetune_cli", "mlflow_server", "postgres"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    # Files with server tests first (stable otherwise): they are the long ones, and under `make
    # test` (pytest-xdist, one file per worker at a time, `--no-loadscope-reorder` so this order
    # holds) a long file handed out last leaves the other worker idle while it finishes.
    slow_files = {item.path for item in items if item.get_closest_marker("integration")}
    items.sort(key=lambda item: item.path not in slow_files)


SST2 = REPO / "examples" / "data" / "sst2"


def read_sst2(split: str) -> pd.DataFrame:
    return pd.read_csv(SST2 / f"{split}.tsv", sep="\t", quoting=3, keep_default_na=False)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    corpus = read_sst2("train")["sentence"].tolist() + read_sst2("test")["sentence"].tolist()
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), corpus)


@pytest.fixture
def sst2_small(tmp_path) -> dict[str, Path]:
    """120 train and 60 test rows of the shipped SST-2 sample, as TSV files."""
    paths = {}
    for split, rows in (("train", 120), ("test", 60)):
        paths[split] = tmp_path / f"{split}.tsv"
        read_sst2(split).head(rows).to_csv(paths[split], sep="\t", index=False, quoting=3)
    return paths


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """An MLflow SQLite store in this test's directory; artifacts land there too."""
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """A temporary Prefect API server for the session; yields its URL for subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def finetune_cli(prefect_server, tmp_path):
    """Run the installed `finetune` command in a subprocess against the session's Prefect server."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("finetune")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    env = {**os.environ, "PREFECT_API_URL": prefect_server}

    def run(*args: str, timeout: int = 600, user_threads: bool = False) -> subprocess.CompletedProcess:
        """``user_threads``: torch's own thread count, not the tests' one (see OMP_NUM_THREADS above)."""
        used = {k: v for k, v in env.items() if not (user_threads and k == "OMP_NUM_THREADS")}
        return subprocess.run(
            [*command, *args], cwd=tmp_path, env=used, capture_output=True, text=True, timeout=timeout
        )

    return run


def tiny_config(backbone: Path, files: dict[str, Path], tracking_uri: str, tmp_path: Path, **sections) -> dict:
    """A raw config for a fast run of the whole flow on a tiny model."""
    config = {
        "task": "classification",
        "data": {"train": str(files["train"]), "test": str(files["test"])},
        "backbone": {"candidates": [str(backbone)]},
        "training": {
            "frozen": {"epochs": 1, "learning_rate": 1e-2},
            "unfrozen": {"epochs": 1, "learning_rate": 1e-3},
            "batch_size": 16,
            "max_length": 32,
            # both stages, as most plumbing tests need; `strategy: auto` (the default) would pick
            # contrastive at these tests' 10-60 rows per class: tests/flows/test_fewshot_flow.py runs it
            "strategy": "lp-ft",
        },
        "mlflow": {"tracking_uri": tracking_uri, "experiment": "tests", "registered_model": "tiny-model"},
        "output_dir": str(tmp_path / "runs"),
        # Plumbing runs: a tiny random BERT learns nothing from 120 SST-2 rows in two epochs, so it
        # ties the majority-class baseline. The baseline gate has its own tests on the defaults.
        "gates": {"beat_baseline": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    return config


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, local artifact root) for the session."""
    from tests.servers import start_mlflow_server, stop

    url, process = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield url
    stop(process)


@pytest.fixture(autouse=True)
def weight_tying_left_working():
    """Fail the test after which transformers' ``tie_weights`` is still a no-op.

    ``from_pretrained`` swaps ``PreTrainedModel.tie_weights`` for a no-op, process-wide, while it
    runs; two loads in different threads can leave the no-op in place for good, and every model
    built afterwards in this worker is silently untied (finetune_core/model/loading.py). This
    names the test that did it instead of a later one that trips over it."""
    from transformers import PreTrainedModel

    original = PreTrainedModel.tie_weights
    yield
    if PreTrainedModel.tie_weights is not original:
        PreTrainedModel.tie_weights = original
        pytest.fail("transformers' PreTrainedModel.tie_weights was left a no-op (concurrent from_pretrained?)")
