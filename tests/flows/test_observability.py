"""What a run shows while it goes and after: one `finetune run` (the installed command, output
not a terminal) against the session's Prefect server, looked at from each side: its log (one
line per epoch, never per batch), Prefect (the per-epoch log lines, the progress artifact at
100 %), MLflow (test metrics on the logged model's page, the three splits as the run's datasets)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from finetune_core.data.snapshots import fingerprint
from finetune_core.run_layout import RunLayout
from tests.conftest import read_sst2, tiny_config

EPOCHS = {"frozen": 2, "unfrozen": 2}


@pytest.fixture(scope="module")
def cli_run(prefect_server, tiny_backbone, tmp_path_factory):
    """The finished run: its stderr, tracking URI, MLflow run, files and run directory."""
    root = tmp_path_factory.mktemp("observed")
    files = {}
    for split, rows in (("train", 120), ("test", 60)):
        files[split] = root / f"{split}.tsv"
        read_sst2(split).head(rows).to_csv(files[split], sep="\t", index=False, quoting=3)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    config = tiny_config(tiny_backbone, files, tracking_uri, root)
    for stage, epochs in EPOCHS.items():
        config["training"][stage]["epochs"] = epochs
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    script = Path(sys.executable).with_name("finetune")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    done = subprocess.run(
        [*command, "run", str(root / "config.yaml")],
        cwd=root,
        env={**os.environ, "PREFECT_API_URL": prefect_server},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 3), done.stderr  # registered (3: the tiny model may fail a gate)
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    return {"stderr": done.stderr, "client": client, "run": run, "files": files, "root": root}


def test_the_log_has_one_line_per_epoch_not_per_batch(cli_run):
    lines = cli_run["stderr"].splitlines()
    for stage, epochs in EPOCHS.items():
        epoch_lines = [line for line in lines if re.search(rf"\b{stage} epoch \d+/{epochs}: train_loss ", line)]
        assert len(epoch_lines) == epochs, cli_run["stderr"]
        assert all(re.search(r"val_accuracy [\d.]+ \d+ samples/s$", line) for line in epoch_lines), epoch_lines
    assert sum("train_loss" in line for line in lines) == sum(EPOCHS.values())  # nothing per batch
    assert "━" not in cli_run["stderr"].split("┏")[0]  # no live bar before the summary table


def test_prefect_has_the_epoch_lines_and_a_progress_artifact_at_100(cli_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        LogFilter,
        LogFilterFlowRunId,
    )

    flow_run_id = cli_run["run"].data.tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as prefect:
        of_this_run = ArtifactFilterFlowRunId(any_=[flow_run_id])
        [artifact] = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["finetune-progress"]), flow_run_id=of_this_run)
        )
        logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    assert artifact.type == "progress" and float(artifact.data) == 100.0
    assert artifact.description.startswith("registered tiny-model version 1")
    messages = [log.message for log in logs]
    for stage, epochs in EPOCHS.items():
        for epoch in range(1, epochs + 1):
            assert sum(m.startswith(f"{stage} epoch {epoch}/{epochs}: train_loss ") for m in messages) == 1, messages


def test_the_logged_models_page_shows_the_test_metrics(cli_run):
    client, run = cli_run["client"], cli_run["run"]
    [output] = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    on_model = {m.key: m for m in model.metrics}
    assert on_model["test/accuracy"].value == pytest.approx(run.data.metrics["test/accuracy"])  # on the run too
    assert {"test/f1_macro", "test/loss", "test/ece"} <= set(on_model)
    test_input = next(i for i in run.inputs.dataset_inputs if i.dataset.name == "test")
    assert on_model["test/accuracy"].dataset_digest == test_input.dataset.digest  # measured on the test split
    assert len(client.get_metric_history(run.info.run_id, "test/accuracy")) == 1  # logged once


def test_the_run_records_its_three_splits_as_datasets(cli_run):
    import json

    run, files = cli_run["run"], cli_run["files"]
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "test"}
    [record] = (cli_run["root"] / "runs").glob("*/run.json")
    prepared = RunLayout(record.parent).data
    expected = {  # split: (context, source file, rows); validation is held out of the train file
        "train": ("training", files["train"], 108),
        "validation": ("validation", files["train"], 12),
        "test": ("test", files["test"], 60),
    }
    for split, (context, source, rows) in expected.items():
        dataset = inputs[split].dataset
        assert {t.key: t.value for t in inputs[split].tags}["mlflow.data.context"] == context
        assert json.loads(dataset.source)["uri"] == str(source.resolve())
        assert json.loads(dataset.profile) == {"num_rows": rows}
        assert dataset.digest == fingerprint({split: str(prepared / f"{split}.parquet")})
