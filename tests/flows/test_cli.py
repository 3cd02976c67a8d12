"""`finetune` exit codes and messages. Configuration errors are checked in process; runs that
reach the flow use the installed command in a subprocess against the session's Prefect server."""

import json

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import tiny_config

runner = CliRunner()


@pytest.fixture
def write_config(tiny_backbone, sst2_small, tracking_uri, tmp_path):
    def write(**sections):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(tiny_config(tiny_backbone, sst2_small, tracking_uri, tmp_path, **sections)))
        return path

    return write


def registered(tracking_uri):
    return MlflowClient(tracking_uri).search_registered_models()


def run_statuses(tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tests")
    return [r.info.status for r in client.search_runs([experiment.experiment_id])] if experiment else []


def test_unknown_key_exits_2_naming_it(write_config, tracking_uri):
    result = runner.invoke(app, ["run", str(write_config(training={"frozen": {"epochz": 1}}))])
    assert result.exit_code == 2, result.output
    assert "training.frozen.epochz: unknown key" in result.output
    assert "Traceback" not in result.output


def test_bad_override_exits_2(write_config):
    result = runner.invoke(app, ["run", str(write_config()), "--set", "training.batch_size=zero"])
    assert result.exit_code == 2 and "training.batch_size:" in result.output


UNREADABLE = {
    "missing": (None, r"data file not found: .*no-such-train\.tsv"),
    "directory": ("dir", r"no-such-train\.tsv: is a directory"),
    "latin1": (
        "sentence\tlabel\nfine\t1\ncaf\xe9\t0\n".encode("latin-1"),
        r"no-such-train\.tsv: not valid UTF-8 at line 3",
    ),
    "ragged": (b"sentence\tlabel\nfine\t1\nragged\t0\textra\n", r"no-such-train\.tsv: line 3 has 3 fields"),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_unreadable_train_file_exits_2_fails_the_run_registers_nothing(
    finetune_cli, write_config, tracking_uri, tmp_path, case
):
    import re

    content, message = UNREADABLE[case]
    path = tmp_path / "no-such-train.tsv"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    result = finetune_cli("run", str(write_config(data={"train": str(path)})))
    assert result.returncode == 2, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert run_statuses(tracking_uri) == ["FAILED"]
    assert registered(tracking_uri) == []


def test_absent_label_column_exits_2_naming_column_and_file(finetune_cli, write_config, tracking_uri):
    result = finetune_cli("run", str(write_config(data={"label_column": "stars"})))
    assert result.returncode == 2, result.stderr
    assert "columns" in result.stderr and "stars" in result.stderr and "train.tsv" in result.stderr
    assert "Traceback" not in result.stderr
    assert run_statuses(tracking_uri) == ["FAILED"]
    assert registered(tracking_uri) == []


def test_run_writes_the_summary_json(finetune_cli, write_config, tracking_uri, tmp_path):
    summary_path = tmp_path / "out" / "summary.json"
    result = finetune_cli(
        "run",
        str(write_config()),
        "--set",
        "training.unfrozen.epochs=2",
        "--set",
        "augmentation.enabled=true",
        "--summary-json",
        str(summary_path),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["model_version"] == "1" and summary["model_uri"].startswith("models:/")
    assert 0.0 <= summary["metrics"]["accuracy"] <= 1.0
    for stage in ("frozen", "unfrozen"):
        assert {"wall_seconds", "train_examples", "samples_per_second"} <= set(summary["stages"][stage])
    assert summary["stages"]["unfrozen"]["epochs"] == 2
    assert summary["stages"]["frozen"]["train_examples"] == 2 * 108  # one augmented copy per training row
    client = MlflowClient(tracking_uri)
    counts = json.loads(
        open(client.download_artifacts(summary["mlflow_run_id"], "data/augmentation.json", str(tmp_path))).read()
    )
    assert counts["added"] == 108 and sum(counts["after"].values()) == 216
    assert MlflowClient(tracking_uri).get_run(summary["mlflow_run_id"]).info.status == "FINISHED"
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stderr


def test_show_config_prints_what_differs_from_the_defaults(write_config):
    result = runner.invoke(app, ["show-config", str(write_config()), "--set", "training.seed=7"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["training"]["seed"] == 7 and shown["training"]["batch_size"] == 16
    assert "weight_decay" not in shown["training"] and "task" not in shown  # defaults: classification, 0.01
    assert shown["gates"] == {"beat_baseline": False} and "validation" not in shown and "augmentation" not in shown
    assert set(shown["data"]) == {"train", "test"}  # required keys are always shown


def test_show_config_all_fills_every_default(write_config):
    result = runner.invoke(app, ["show-config", str(write_config()), "--all", "--set", "training.seed=7"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["training"]["seed"] == 7 and shown["training"]["weight_decay"] == 0.01
    assert shown["task"] == "classification" and shown["validation"]["min_train_rows"] == 10


def test_show_config_compares_nested_sections_key_by_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data: {train: a.csv, test: b.csv}\ntraining: {unfrozen: {epochs: 1}}\n")
    result = runner.invoke(app, ["show-config", str(path)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["training"] == {"unfrozen": {"epochs": 1}} and set(shown) == {"data", "training"}


def test_a_retired_key_loads_with_a_warning_on_stderr(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data: {train: a.csv, test: b.csv}\ntraining: {unfrozen: {dropout_masks: torch}}\n")
    result = runner.invoke(app, ["show-config", str(path), "--set", "training.token_rows=all"])
    assert result.exit_code == 0, result.output
    assert "warning: training.unfrozen.dropout_masks is retired" in result.stderr
    assert "warning: training.token_rows is retired (2026-12-03) and its value 'all' is ignored" in result.stderr
    data = {"train": str(tmp_path / "a.csv"), "test": str(tmp_path / "b.csv")}
    assert yaml.safe_load(result.stdout) == {"data": data}  # nothing else differs from the defaults


def test_resume_of_something_that_is_not_a_run_directory_exits_2(finetune_cli, write_config, tmp_path):
    result = finetune_cli("run", str(write_config()), "--resume", str(tmp_path / "nowhere"))
    assert result.returncode == 2, result.stderr
    assert "nowhere: not a run directory" in result.stderr


def test_validate_passes_clean_data_and_writes_data_docs(write_config, tmp_path):
    result = runner.invoke(app, ["validate", str(write_config()), "--report-dir", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "data validation passed" in result.output
    assert (tmp_path / "report" / "validation_results.json").exists()


def test_validate_exits_2_with_a_table_of_failures(write_config, sst2_small, tmp_path):
    import pandas as pd

    train = pd.read_csv(sst2_small["train"], sep="\t", quoting=3, keep_default_na=False)
    leaky = tmp_path / "leaky-test.tsv"
    train.head(30).to_csv(leaky, sep="\t", index=False, quoting=3)
    result = runner.invoke(app, ["validate", str(write_config(data={"test": str(leaky)}))])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0].startswith("data validation FAILED") and "SEVERITY" in lines[1]
    assert any("leakage" in line and "leaky-test.tsv" in line for line in lines)


def test_validate_names_an_unreadable_file_and_its_line(write_config, tmp_path):
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("sentence\tlabel\nfine\t1\ncaf\xe9\t0\n".encode("latin-1"))
    result = runner.invoke(app, ["validate", str(write_config(data={"train": str(bad)}))])
    assert result.exit_code == 2
    assert "latin1.tsv: not valid UTF-8 at line 3" in result.output and "Traceback" not in result.output


def test_the_run_summary_lists_per_label_figures_only_for_a_few_labels():
    from types import SimpleNamespace

    from rich.console import Console

    from flows.cli.run_summary import SUMMARY_MAX_LABELS, summary_table

    def shown(labels: int) -> str:
        metrics = {"f1_macro": 0.5, "f1_micro": 0.6}
        for i in range(labels):
            metrics.update({f"precision_l{i}": 0.1, f"recall_l{i}": 0.2, f"f1_l{i}": 0.3, f"support_l{i}": 4.0})
        stage = {"epochs_run": 1, "epochs": 1, "wall_seconds": 1.0, "samples_per_second": 10.0}
        result = SimpleNamespace(
            registered_model="m", model_version="1", metrics=metrics, stages={"frozen": stage},
            gate_passed=True, champion=True, mlflow_run_id="r",
        )  # fmt: skip
        console = Console(width=200, record=True)
        console.print(summary_table(result))
        return console.export_text()

    few, many = shown(2), shown(SUMMARY_MAX_LABELS + 1)
    assert "test precision_l1" in few and "test f1_l0" in few and "test support_l0" not in few
    assert "test f1_macro" in many and "test f1_micro" in many
    assert "precision_l0" not in many and "f1_l3" not in many
    assert f"{SUMMARY_MAX_LABELS + 1} labels: MLflow run metrics" in many
