"""`finetune predict`, `finetune models --json` and `finetune --version`, on a model logged from a
tiny random BERT and registered in a temporary MLflow store (found through MLFLOW_TRACKING_URI,
as `finetune run` finds it)."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from finetune_core.serving.predictor import ModelMeta, save_model_dir
from flows.cli import app
from tasks.register import log_pyfunc
from tests.conftest import read_sst2

runner = CliRunner()
NAME = "scorer"
PROBABILITIES = ["probability_0", "probability_1"]


@pytest.fixture(scope="module")
def store(tiny_backbone, tmp_path_factory) -> dict:
    """A registered model (version 1, alias champion) with a headline test metric, and its run."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("predict-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=2)
    meta = ModelMeta(task="classification", text_column="sentence", max_length=32, labels=["0", "1"])
    model_dir = save_model_dir(model, AutoTokenizer.from_pretrained(tiny_backbone), meta, root / "model")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("predict")
    with mlflow.start_run() as run:
        logged = log_pyfunc(model_dir, pd.DataFrame({"sentence": ["a fine film"]}), run.info.run_id)
        mlflow.log_metric("test/accuracy", 0.75)
        mlflow.log_metric("test/f1_macro", 0.5)
    version = mlflow.register_model(logged, NAME, tags={"task": "classification", "gate": "passed"})
    client = MlflowClient(uri)
    client.set_registered_model_alias(NAME, "champion", version.version)
    mlflow.set_tracking_uri(previous)
    return {"uri": uri, "run_id": run.info.run_id, "logged": logged}


@pytest.fixture
def in_store(store, monkeypatch, tmp_path):
    """Only the environment names the store, as in a deployed job."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(tmp_path)
    return store


def scored_input(rows: int = 30) -> pd.DataFrame:
    """SST-2 rows with an id first and the label kept (scoring a labelled file is common)."""
    frame = read_sst2("test").head(rows)
    return pd.DataFrame({"id": np.arange(rows) * 7 + 3, "sentence": frame["sentence"], "label": frame["label"]})


def write(frame: pd.DataFrame, path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)


def read(path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".tsv":
        return pd.read_csv(path, sep="\t", quoting=3)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_parquet(path)


def direct_predictions(store, frame: pd.DataFrame) -> pd.DataFrame:
    mlflow.set_tracking_uri(store["uri"])
    return mlflow.pyfunc.load_model(store["logged"]).predict(frame[["sentence"]])


@pytest.mark.parametrize(
    ("model_uri", "source", "target"),
    [
        (f"models:/{NAME}@champion", "in.csv", "out.csv"),
        (f"models:/{NAME}/1", "in.jsonl", "out.jsonl"),
        ("runs", "in.parquet", "out.parquet"),
        (f"models:/{NAME}@champion", "in.tsv", "out.tsv"),
        (f"models:/{NAME}@champion", "in.csv", "out.parquet"),
    ],
)
def test_predict_keeps_the_input_columns_and_row_order(in_store, tmp_path, model_uri, source, target):
    model_uri = f"runs:/{in_store['run_id']}/model" if model_uri == "runs" else model_uri
    frame = scored_input()
    write(frame, tmp_path / source)
    result = runner.invoke(app, ["predict", model_uri, source, target, "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    out = read(tmp_path / target)
    # the input's columns first, then the model's; its `label` collides with the input's
    assert list(out.columns) == ["id", "sentence", "label", "predicted_label", *PROBABILITIES]
    assert out["id"].tolist() == frame["id"].tolist() and out["sentence"].tolist() == frame["sentence"].tolist()
    expected = direct_predictions(in_store, frame)
    assert out["predicted_label"].astype(str).tolist() == expected["label"].tolist()
    assert np.allclose(out[PROBABILITIES].to_numpy(), expected[PROBABILITIES].to_numpy(), atol=1e-5)
    assert f"scored {len(frame)} rows" in result.stderr  # not a terminal: one summary line
    assert not list(tmp_path.glob(".*.partial"))


def test_batch_size_does_not_change_the_scores(in_store, tmp_path):
    frame = scored_input(30)
    write(frame, tmp_path / "in.csv")
    for batch_size, target in ((7, "small.csv"), (30, "one.csv")):
        result = runner.invoke(
            app, ["predict", f"models:/{NAME}@champion", "in.csv", target, "--batch-size", str(batch_size)]
        )
        assert result.exit_code == 0, result.output
    small, whole = read(tmp_path / "small.csv"), read(tmp_path / "one.csv")
    assert small[["id", "sentence", "label", "predicted_label"]].equals(
        whole[["id", "sentence", "label", "predicted_label"]]
    )
    assert np.allclose(small[PROBABILITIES].to_numpy(), whole[PROBABILITIES].to_numpy(), atol=1e-5)


def test_a_text_column_of_numbers_is_scored_as_text(in_store, tmp_path):
    pd.DataFrame({"sentence": [12, 345, 6789]}).to_csv(tmp_path / "in.csv", index=False)
    result = runner.invoke(app, ["predict", f"models:/{NAME}@champion", "in.csv", "out.jsonl"])
    assert result.exit_code == 0, result.output
    out = read(tmp_path / "out.jsonl")
    assert out["sentence"].tolist() == [12, 345, 6789] and out["label"].notna().all()


def test_a_missing_input_column_exits_2_naming_it(in_store, tmp_path):
    scored_input().rename(columns={"sentence": "text"}).to_csv(tmp_path / "in.csv", index=False)
    result = runner.invoke(app, ["predict", f"models:/{NAME}@champion", "in.csv", "out.csv"])
    assert result.exit_code == 2, result.output
    assert "column 'sentence' not found" in result.output and "in.csv" in result.output
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("model_uri", "output", "message"),
    [
        (f"models:/{NAME}@nobody", "out.csv", "model models:/scorer@nobody"),
        ("models:/no-such-model/1", "out.csv", "model models:/no-such-model/1"),
        (f"models:/{NAME}@champion", "out.xlsx", "unsupported extension '.xlsx'"),
    ],
)
def test_bad_model_or_output_exits_2(in_store, tmp_path, model_uri, output, message):
    scored_input().to_csv(tmp_path / "in.csv", index=False)
    result = runner.invoke(app, ["predict", model_uri, "in.csv", output])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_tracking_server_that_is_down_exits_4_naming_it(tmp_path, monkeypatch):
    from tests.servers import free_port

    monkeypatch.chdir(tmp_path)
    scored_input().to_csv(tmp_path / "in.csv", index=False)
    down = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["predict", f"models:/{NAME}@champion", "in.csv", "out.csv", "--tracking-uri", down])
    assert result.exit_code == 4, result.output
    assert down in result.output and not (tmp_path / "out.csv").exists()


def test_models_json_lists_versions_aliases_tags_and_metrics(in_store):
    result = runner.invoke(app, ["models", NAME, "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert listing["name"] == NAME and listing["aliases"] == {"champion": "1"}
    (version,) = listing["versions"]
    assert version["version"] == "1" and version["aliases"] == ["champion"]
    assert version["tags"]["gate"] == "passed" and version["run_id"] == in_store["run_id"]
    assert version["metrics"] == {"accuracy": 0.75, "f1_macro": 0.5}
    table = runner.invoke(app, ["models", NAME])  # the same listing as a table
    assert table.exit_code == 0 and "champion" in table.output and "accuracy 0.7500" in table.output
    unknown = runner.invoke(app, ["models", "no-such-model", "--json"])
    assert unknown.exit_code == 2 and "no registered model 'no-such-model'" in unknown.output


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"finetune-pipeline {version('finetune-pipeline')}"
