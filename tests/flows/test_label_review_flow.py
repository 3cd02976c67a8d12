"""Label review in the `finetune` flow on a tiny backbone: planted flips in easy data are flagged
and shown (the CSV logged with the run, the metric, a Prefect table, the version description);
the error level stops the run before the unfrozen stage with nothing registered; a few-shot run
fits its temperature on the out-of-fold predictions."""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.errors import DataError
from tests.conftest import tiny_config
from tests.datasets import easy_sentiment

PLANTED = [3, 10, 17, 24, 31, 38, 45, 52, 59, 66]  # positions in the train file: labels flipped


def _files(tmp_path, rows: int = 240) -> dict:
    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    train = easy_sentiment(rows, 0)
    train.loc[PLANTED, "label"] = 1 - train.loc[PLANTED, "label"]
    train.to_csv(files["train"], index=False)
    easy_sentiment(40, 1).to_csv(files["test"], index=False)
    return files


def _config(tiny_backbone, files, tracking_uri, tmp_path, **validation):
    raw = tiny_config(tiny_backbone, files, tracking_uri, tmp_path, validation=validation)
    raw["data"]["validation"] = str(files.get("validation", files["test"]))  # train rows stay in file order
    # mean pooling and a weak penalty: the tiny random BERT's features then separate easy_sentiment
    raw["backbone"]["pooling"] = "mean"
    raw["training"].update(strategy="linear-probe", frozen={"epochs": 2, "regularization": 100.0})
    return validate_config(raw)


def _prefect_artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        return prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_the_error_level_stops_before_the_unfrozen_stage(prefect_server, tiny_backbone, tracking_uri, tmp_path):
    from flows.finetune import finetune

    files = _files(tmp_path)
    config = _config(
        tiny_backbone, files, tracking_uri, tmp_path, max_suspect_label_fraction=0.01, suspect_labels="error"
    )
    config.training.strategy = "lp-ft"
    with pytest.raises(DataError, match=r"train labels .* review/suspect_labels.csv; above .* 0.01"):
        finetune(config)
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"
    assert not any(m.key.startswith("unfrozen/") for m in run.data.metrics.values() if hasattr(m, "key"))
    assert not [k for k in run.data.metrics if k.startswith("unfrozen/")]
    assert client.search_model_versions("name='tiny-model'") == []
    assert "review/suspect_labels.csv" in {a.path for a in client.list_artifacts(run.info.run_id, "review")}


def test_a_few_shot_run_calibrates_on_out_of_fold_predictions(prefect_server, tiny_backbone, tracking_uri, tmp_path):
    from flows.finetune import finetune

    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    easy_sentiment(16, 0).to_csv(files["train"], index=False)  # 8 per class: auto picks contrastive
    easy_sentiment(40, 1).to_csv(files["test"], index=False)
    raw = tiny_config(tiny_backbone, files, tracking_uri, tmp_path)
    del raw["training"]["strategy"]
    result = finetune(validate_config(raw))
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["training.validation_use"].startswith("skipped")
    # the tuned encoder saw every row: the logits come from fold encoders tuned without theirs
    source = "out-of-fold (2 folds over the train rows, each fold's encoder tuned without its rows)"
    assert run.data.params["calibration.source"] == source
    with np.load(Path(result.run_dir) / "review" / "out_of_fold.npz") as saved:  # the temperature's data
        logits, targets = saved["logits"], saved["targets"]
    assert logits.shape == (16, 2) and sorted(targets.tolist()) == [0] * 8 + [1] * 8

    def nll(temperature):  # what the temperature minimises (not ECE, which it may raise on 16 rows)
        scaled = logits / temperature
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        return -(scaled[np.arange(16), targets] - np.log(np.exp(scaled).sum(axis=1))).mean()

    assert nll(result.calibration["temperature"]) <= nll(1.0) + 1e-9  # the prior only stops it short
    mlflow.set_tracking_uri(tracking_uri)
    served = mlflow.pyfunc.load_model(f"models:/tiny-model/{result.model_version}")._model_impl.python_model
    description = client.get_model_version("tiny-model", result.model_version).description
    if "oof_temperature_kept" in result.calibration:  # the folds did not beat the majority class
        assert "temperature kept at 1" in description and result.calibration["temperature"] == 1.0
    else:
        assert "fitted on the out-of-fold predictions" in description
        assert f"temperature {result.calibration['temperature']:.3f}" in description
    assert served is not None


def test_suspects_are_reported_dropped_and_on_retrain_only_the_new_rows(
    prefect_server, tiny_backbone, tracking_uri, tmp_path
):
    from flows.finetune import finetune
    from flows.retrain import retrain

    incoming = tmp_path / "incoming"
    first, second = incoming / "2026-12-01", incoming / "2026-12-02"
    first.mkdir(parents=True), second.mkdir()
    old = easy_sentiment(240, 0)
    old.loc[PLANTED, "label"] = 1 - old.loc[PLANTED, "label"]
    old.to_csv(first / "train.csv", index=False)
    new = easy_sentiment(120, 9)
    new_flips = [5, 20, 35, 50, 65, 80]
    new.loc[new_flips, "label"] = 1 - new.loc[new_flips, "label"]
    new = new[~new["sentence"].isin(old["sentence"])]
    pd.concat([old, new]).to_csv(second / "train.csv", index=False)
    for folder in (first, second):
        easy_sentiment(40, 1).to_csv(folder / "test.csv", index=False)
        easy_sentiment(40, 1).to_csv(folder / "validation.csv", index=False)
    files = {"train": first / "train.csv", "test": first / "test.csv", "validation": first / "validation.csv"}
    config = _config(tiny_backbone, files, tracking_uri, tmp_path, max_suspect_label_fraction=0.02)
    config.training.strategy, config.training.drop_suspect_labels = "lp-ft", True
    result = finetune(config)  # trained on the first snapshot: the champion
    assert result.champion
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    suspects = pd.read_csv(client.download_artifacts(run.info.run_id, "review/suspect_labels.csv", str(tmp_path)))
    assert list(suspects.columns) == ["row", "text", "given_label", "suggested_label", "score"]
    flagged = set(suspects["row"])
    assert len(flagged & set(PLANTED)) >= 6 and len(flagged - set(PLANTED)) <= 4  # found, few clean rows
    first_row = suspects.iloc[0]
    assert first_row["text"] == old.loc[first_row["row"], "sentence"]
    assert str(first_row["given_label"]) == str(old.loc[first_row["row"], "label"]) != str(first_row["suggested_label"])
    assert run.data.metrics["labels/suspect_fraction"] == pytest.approx(len(suspects) / 240)
    description = client.get_model_version("tiny-model", result.model_version).description
    assert "### Label review" in description and "**warning**" in description  # 0.02 exceeded: warned, registered
    assert f"| {first_row['row']} | {first_row['text']} |" in description
    assert any(str(first_row["text"]) in table.data for table in _prefect_artifact("suspect-labels"))
    # training.drop_suspect_labels: the unfrozen stage trains without the flagged rows, which are recorded
    dropped = pd.read_csv(client.download_artifacts(run.info.run_id, "review/dropped_rows.csv", str(tmp_path)))
    assert sorted(dropped["row"]) == sorted(flagged)
    assert result.stages["unfrozen"]["train_examples"] == 240 - len(dropped)
    # the second reading, after stage 2: rows of the train split it trained on, with their given labels
    again = pd.read_csv(client.download_artifacts(run.info.run_id, "review/suspect_labels_training.csv", str(tmp_path)))
    assert list(again.columns) == ["row", "text", "given_label", "suggested_label", "score"]
    kept = old.drop(index=sorted(dropped["row"])).reset_index(drop=True)
    assert (again["text"] == kept.loc[again["row"], "sentence"].to_numpy()).all()
    assert (again["given_label"].astype(str) == kept.loc[again["row"], "label"].astype(str).to_numpy()).all()
    assert (again["score"] < 0).all() and again["score"].is_monotonic_increasing
    assert run.data.metrics["labels/training_suspects"] == len(again)
    assert run.data.metrics["labels/training_suspect_fraction"] == pytest.approx(len(again) / len(kept))
    assert f"after training, {len(again)} of {len(kept)} train labels flagged" in description
    assert _prefect_artifact("suspect-labels-after-training")

    retrained = retrain(str(incoming), config)
    run_id = client.get_model_version("tiny-model", retrained.model_version).run_id
    everything = pd.read_csv(client.download_artifacts(run_id, "review/suspect_labels.csv", str(tmp_path / "a")))
    fresh = pd.read_csv(client.download_artifacts(run_id, "review/suspect_labels_new.csv", str(tmp_path / "b")))
    assert retrained.new_suspect_labels == len(fresh) > 0
    assert set(fresh["text"]) <= set(new["sentence"])  # only rows the snapshot added
    assert set(everything["text"]) & set(old["sentence"])  # the run's own review also flags old rows
    flipped = set(new.loc[[i for i in new_flips if i in new.index], "sentence"])
    assert len(set(fresh["text"]) & flipped) >= len(flipped) - 2
    assert _prefect_artifact("new-suspect-labels")
    fresh_again = client.download_artifacts(run_id, "review/suspect_labels_training_new.csv", str(tmp_path / "c"))
    fresh_again = pd.read_csv(fresh_again, keep_default_na=False)
    assert retrained.new_suspect_labels_after_training == len(fresh_again)
    assert set(fresh_again["text"]) <= set(new["sentence"])
