"""Reviewer files for both task types, and registration that never registers a run twice."""

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from finetune_core.evaluation.review import write_review_files

STAGES = {
    "frozen": {"history": [{"epoch": 1, "train_loss": 0.7, "val_accuracy": 0.6}]},
    "unfrozen": {
        "history": [
            {"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.7},
            {"epoch": 2, "train_loss": 0.4, "val_accuracy": 0.8},
        ]
    },
}


def test_classification_review_files(tmp_path):
    served = pd.DataFrame(
        {"label": ["b", "a", "b", "a"], "probability_a": [0.1, 0.9, 0.4, 0.7], "probability_b": [0.9, 0.1, 0.6, 0.3]}
    )
    targets = np.array([1, 0, 0, 1])
    files = write_review_files(tmp_path, "classification", ["w", "x", "y", "z"], targets, served, ["a", "b"], STAGES)
    assert set(files) == {"training_curves", "worst_examples", "confusion_matrix", "calibration", "per_class_report"}
    assert all(path.stat().st_size > 0 for path in files.values())
    assert all(files[k].read_bytes()[:4] == b"\x89PNG" for k in ("training_curves", "confusion_matrix", "calibration"))
    worst = pd.read_csv(files["worst_examples"])
    assert worst["text"].tolist()[:2] == ["z", "y"]  # the two mistakes, least probable true class first
    assert "precision" in files["per_class_report"].read_text()


def test_regression_review_files(tmp_path):
    served = pd.DataFrame({"prediction": [1.0, 2.5, 2.9]})
    files = write_review_files(tmp_path, "regression", ["a", "b", "c"], np.array([1.0, 2.0, 5.0]), served, None, STAGES)
    assert set(files) == {"training_curves", "worst_examples", "residuals"}
    assert files["residuals"].read_bytes()[:4] == b"\x89PNG"
    assert pd.read_csv(files["worst_examples"])["text"].tolist() == ["c", "b", "a"]


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_registering_the_same_run_twice_keeps_one_version(prefect_server, tracking_uri, tmp_path):
    from prefect import flow

    from finetune_core.config.loading import validate_config
    from tasks.register import register_model

    config = validate_config(
        {
            "data": {"train": "a.csv", "test": "b.csv"},
            "mlflow": {"tracking_uri": tracking_uri, "registered_model": "echo"},
        }
    )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("echo")  # earlier tests leave another store's experiment active
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo())

    @flow
    def register_twice():
        first = register_model(config, info.model_uri, run.info.run_id, {"gate": "passed"}, "first", True)
        again = register_model(config, info.model_uri, run.info.run_id, {"gate": "passed"}, "again", True)
        return first, again

    first, again = register_twice()
    client = MlflowClient(tracking_uri)
    assert first.version == again.version == "1"
    assert len(client.search_model_versions("name = 'echo'")) == 1
    assert client.get_model_version("echo", "1").description == "again"
    assert {a: str(v) for a, v in client.get_registered_model("echo").aliases.items()} == {
        "champion": "1",
        "challenger": "1",
    }
