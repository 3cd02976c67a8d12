"""The `finetune` flow on sentence pairs (`data.text_pair_column`), tiny backbone, real Prefect and
MLflow: the registered pyfunc model needs both columns; a blank second text stops the run (exit 2)."""

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from finetune_core.config.loading import validate_config
from finetune_core.serving.predictor import Predictor
from flows.cli import app
from tests.conftest import read_sst2, tiny_config

PAIRS = {"text_column": "sentence1", "text_pair_column": "sentence2"}


def pair_files(tmp_path: Path) -> dict[str, Path]:
    """SST-2 sentences paired with the next row's; the label stays the first sentence's."""
    paths = {}
    for split, rows in (("train", 120), ("test", 60)):
        frame = read_sst2(split).head(rows + 1)
        pairs = pd.DataFrame(
            {
                "sentence1": frame["sentence"].iloc[:-1].to_numpy(),
                "sentence2": frame["sentence"].iloc[1:].to_numpy(),
                "label": frame["label"].iloc[:-1].to_numpy(),
            }
        )
        paths[split] = tmp_path / f"{split}-pairs.tsv"
        pairs.to_csv(paths[split], sep="\t", index=False, quoting=3)
    return paths


def test_pair_flow_registers_a_model_that_needs_both_columns(
    prefect_server, tiny_backbone, tracking_uri, tmp_path, monkeypatch
):
    from flows.finetune import finetune

    files = pair_files(tmp_path)
    config = validate_config(tiny_config(tiny_backbone, files, tracking_uri, tmp_path, data=PAIRS))
    result = finetune(config)
    assert result.model_version == "1"

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model("models:/tiny-model/1")
    assert model.metadata.get_input_schema().input_names() == ["sentence1", "sentence2"]
    both = pd.DataFrame({"sentence1": ["a gorgeous , witty film", "a dull mess"], "sentence2": ["fine", "bad"]})
    predictions = model.predict(both)
    assert list(predictions.columns) == ["label", "probability_0", "probability_1"]
    swapped = model.predict(both.assign(sentence2=["a dull mess", "a gorgeous , witty film"]))
    assert not predictions["probability_1"].equals(swapped["probability_1"])  # the second text is read
    with pytest.raises(Exception, match="sentence2"):
        model.predict(both[["sentence1"]])

    model_dir = Path(result.run_dir) / "model"
    if not model_dir.is_dir():  # the final model directory of the run, whatever its name
        model_dir = next(p.parent for p in Path(result.run_dir).rglob("finetune_meta.json"))
    predictor = Predictor.load(model_dir)
    assert predictor.meta.text_pair_column == "sentence2"
    with pytest.raises(ValueError, match=r"'sentence2'"):
        predictor.predict_frame(both[["sentence1"]])

    served = pd.read_parquet(Path(result.run_dir) / "test_predictions.parquet")
    assert {"text", "text_pair", "target", "label"} <= set(served.columns) and len(served) == 60
    worst = pd.read_csv(Path(result.run_dir) / "review" / "worst_test_examples.csv")
    assert {"text", "text_pair", "true_label"} <= set(worst.columns)

    # batch scoring reads both columns the signature names; a file without the second one is exit 2
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    both.assign(id=[7, 3]).to_csv(tmp_path / "in.csv", index=False)
    scored = CliRunner().invoke(app, ["predict", "models:/tiny-model/1", "in.csv", "out.csv"])
    assert scored.exit_code == 0, scored.output
    out = pd.read_csv(tmp_path / "out.csv")
    assert (
        out["id"].tolist() == [7, 3]
        and out["probability_1"].round(5).tolist() == predictions["probability_1"].round(5).tolist()
    )
    both[["sentence1"]].to_csv(tmp_path / "half.csv", index=False)
    missing = CliRunner().invoke(app, ["predict", "models:/tiny-model/1", "half.csv", "half-out.csv"])
    assert missing.exit_code == 2 and "sentence2" in missing.output


def test_a_blank_pair_text_exits_2_naming_file_column_and_row(prefect_server, tiny_backbone, tracking_uri, tmp_path):
    files = pair_files(tmp_path)
    train = pd.read_csv(files["train"], sep="\t", quoting=3, keep_default_na=False)
    train.loc[9, "sentence2"] = " "
    train.to_csv(files["train"], sep="\t", index=False, quoting=3)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_backbone, files, tracking_uri, tmp_path, data=PAIRS)))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "train-pairs.tsv" in result.output and "sentence2" in result.output and "row 10" in result.output
    assert MlflowClient(tracking_uri).search_registered_models() == []
