"""The `finetune` flow on a multilabel task (`task: multilabel`), tiny backbone, real Prefect and MLflow:
the registered pyfunc model returns a `labels` list plus `probability_<label>` with the thresholds tuned
on validation; a label value that is not a list stops the run (exit 2, run FAILED, nothing registered)."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from finetune_core.config.loading import validate_config
from finetune_core.serving.predictor import load_meta
from flows.cli import app
from tests.conftest import REPO, tiny_config
from tests.tiny_models import build_tiny_bert

REUTERS = REPO / "examples" / "data" / "reuters"
COLUMNS = {"text_column": "text", "label_column": "labels"}
TOPICS = ["acq", "corn", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade", "wheat"]


def reuters_files(tmp_path: Path, train_rows: int = 160, test_rows: int = 50) -> dict[str, Path]:
    """The head of the shipped Reuters sample (JSONL, labels as JSON lists)."""
    paths = {}
    for split, rows in (("train", train_rows), ("test", test_rows)):
        frame = pd.read_json(REUTERS / f"{split}.jsonl", lines=True).head(rows)
        paths[split] = tmp_path / f"{split}.jsonl"
        frame.to_json(paths[split], orient="records", lines=True)
    return paths


def multilabel_config(backbone, files, tracking_uri, tmp_path) -> dict:
    raw = tiny_config(backbone, files, tracking_uri, tmp_path, data=COLUMNS)
    raw["task"] = "multilabel"
    raw["validation"] = {"min_class_rows_error": 2}  # the head of the sample has topics with few rows
    return raw


def test_multilabel_flow_registers_a_model_serving_labels_and_probabilities(
    prefect_server, tiny_backbone, tracking_uri, tmp_path, monkeypatch
):
    from flows.finetune import finetune

    files = reuters_files(tmp_path)
    raw = multilabel_config(tiny_backbone, files, tracking_uri, tmp_path)
    # two candidates: the select-backbone subflow scores the label matrix as multi-output targets
    wider = build_tiny_bert(tmp_path / "wider", pd.read_json(files["train"], lines=True)["text"].tolist(), hidden=48)
    raw["backbone"]["candidates"].append(str(wider))
    result = finetune(validate_config(raw))
    assert result.model_version == "1"
    assert {"f1_macro", "f1_micro", "subset_accuracy", "roc_auc_macro", "f1_earn", "support_grain"} <= set(
        result.metrics
    )

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model("models:/tiny-model/1")
    texts = pd.DataFrame({"text": ["WHEAT EXPORTS RISE sharply", "COMPANY REPORTS 1ST QTR NET profit"]})
    served = model.predict(texts)
    assert list(served.columns) == ["labels"] + [f"probability_{t}" for t in TOPICS]
    assert all(isinstance(list(row), list) and set(row) <= set(TOPICS) for row in served["labels"])

    # the thresholds tuned on validation are stored with the model and decide the served labels
    meta = load_meta(next(Path(result.run_dir).rglob("finetune_meta.json")).parent)
    assert meta.task == "multilabel" and meta.labels == TOPICS and len(meta.thresholds) == len(TOPICS)
    probabilities = served[[f"probability_{t}" for t in TOPICS]].to_numpy()
    expected = [[t for t, p, cut in zip(TOPICS, row, meta.thresholds) if p >= cut] for row in probabilities]
    assert [list(row) for row in served["labels"]] == expected

    run = MlflowClient(tracking_uri).get_run(result.mlflow_run_id)
    assert "calibration/val_f1_macro_tuned" in run.data.metrics and run.info.status == "FINISHED"
    assert "selection/seconds" in run.data.metrics
    ranking = json.loads(mlflow.artifacts.load_text(f"runs:/{result.mlflow_run_id}/selection/ranking.json"))
    assert [row["rank"] for row in ranking["ranking"]] == [1, 2]  # both scored on the label matrix
    assert all(row["score"] is not None for row in ranking["ranking"])
    review = Path(result.run_dir) / "review"
    assert {"per_label_report.txt", "label_cooccurrence.csv", "label_cooccurrence.png"} <= {
        p.name for p in review.iterdir()
    }
    assert "threshold" in (review / "per_label_report.txt").read_text()

    # batch scoring writes the label lists (JSONL keeps them as lists)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    texts.to_csv(tmp_path / "in.csv", index=False)
    scored = CliRunner().invoke(app, ["predict", "models:/tiny-model/1", "in.csv", "out.jsonl"])
    assert scored.exit_code == 0, scored.output
    out = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert [list(r) for r in out["labels"]] == [list(r) for r in served["labels"]]


def test_a_label_that_is_not_a_list_exits_2_naming_file_column_and_row(
    prefect_server, tiny_backbone, tracking_uri, tmp_path
):
    files = reuters_files(tmp_path)
    rows = [json.loads(line) for line in files["train"].read_text().splitlines()]
    rows[6]["labels"] = "earn"  # a bare string, no data.label_separator
    files["train"].write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(multilabel_config(tiny_backbone, files, tracking_uri, tmp_path)))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    output = result.output
    assert all(part in output for part in ("train.jsonl", "labels", "label_format", "row 7")), output
    client = MlflowClient(tracking_uri)
    assert client.search_registered_models() == []
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
