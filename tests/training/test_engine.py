"""The training engine: feature cache, pooling, layer-wise rates, gradual unfreezing, early
stopping, resume, strategies, LoRA, calibration. Tiny random BERTs, CPU."""

import json

import numpy as np
import pytest
import torch

from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.model.backbone import load_for_task, load_tokenizer
from finetune_core.model.batching import collate, encode
from finetune_core.model.features import FeatureSettings, cached_features
from finetune_core.model.heads import head_spec, num_layers, resolve_pooling
from finetune_core.serving.predictor import Predictor, load_model_dir
from finetune_core.training import calibration_step, frozen_stage, unfrozen_stage
from finetune_core.training.checkpoint import Checkpointer
from finetune_core.training.device import Runtime
from finetune_core.training.loop import EpochLoop, StepSettings, network_epoch
from finetune_core.training.losses import targets_tensor
from finetune_core.training.optim import (
    apply_trainable_depths,
    depth_of_parameters,
    layerwise_groups,
    make_optimizer,
    unfrozen_depths,
)
from finetune_core.training.stage_setup import StageInputs
from tests.datasets import easy_sentiment
from tests.training.stage_helpers import Killed, easy_task_config, kill_after, weights, write_easy_task

CPU = Runtime(device=torch.device("cpu"), precision="fp32")


@pytest.fixture
def task_files(tmp_path):
    return write_easy_task(tmp_path, 160, 60)


def make_config(files, backbone, **training):
    base = {
        "frozen": {"epochs": 3, "learning_rate": 1e-2},
        "unfrozen": {"epochs": 3, "learning_rate": 1e-3},
        "batch_size": 16,
        "max_length": 16,
        "precision": "fp32",
        "cache_dir": str(files / "cache"),
    }
    base.update(training)
    return easy_task_config(files, backbone, base)


def test_cached_features_equal_live_features_and_are_reused(tmp_path, tiny_backbone):
    model = load_for_task(str(tiny_backbone), "classification", ["a", "b"]).eval()
    tokenizer = load_tokenizer(str(tiny_backbone))
    encoded = encode(tokenizer, ["a good film", "bad", "the story of it is a wonderful movie"], 16)
    spec = head_spec(model, "mean")
    args = dict(
        max_length=16,
        batch_size=2,
        device="cpu",
        autocast=CPU.autocast,
        precision="fp32",
        pooling="mean",
        cache_dir=tmp_path,
    )
    features, hit = cached_features(model, spec, encoded, str(tiny_backbone), FeatureSettings(**args))
    assert not hit and features.shape == (3, 32)
    with torch.inference_mode():  # one row at a time, no padding at all
        live = torch.cat([spec.features(model, collate(encoded, [i])) for i in range(3)])
    assert torch.allclose(features, live, atol=1e-5)
    again, hit = cached_features(model, spec, encoded, str(tiny_backbone), FeatureSettings(**args))
    assert hit and torch.equal(again, features)
    _, hit = cached_features(model, spec, encoded, str(tiny_backbone), FeatureSettings(**{**args, "pooling": "native"}))
    assert not hit  # another pooling is another cache entry


def test_frozen_stage_reuses_the_cache_on_a_rerun(task_files, tiny_backbone):
    config = make_config(task_files, tiny_backbone)
    prepared = prepare_splits(config, task_files / "data")
    first = frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), task_files / "a"))
    second = frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), task_files / "b"))
    assert first.extra["feature_cache_hits"] == 0 and second.extra["feature_cache_hits"] == 2
    assert first.history == second.history


def test_pooling_resolution(tmp_path, tiny_backbone):
    assert resolve_pooling("auto", str(tiny_backbone)) == "native"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert resolve_pooling("auto", str(tmp_path)) == "mean"
    assert resolve_pooling("cls", str(tmp_path)) == "cls"
    # two texts at once: a single-sentence embedding's pooling does not count, [CLS]'s pooler does
    assert resolve_pooling("auto", str(tmp_path), pairs=True) == "native"
    assert resolve_pooling("mean", str(tmp_path), pairs=True) == "mean"  # explicit wins
    # a sentence-transformers pipeline ending in Normalize: the head reads unit-length vectors
    modules = [{"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert resolve_pooling("auto", str(tmp_path)) == "mean"
    modules.append({"idx": 2, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert resolve_pooling("auto", str(tmp_path)) == "normalized-mean"
    assert resolve_pooling("auto", str(tmp_path), pairs=True) == "native"  # pairs: still BERT's pooler
    (tmp_path / "modules.json").write_text("{not json")
    assert resolve_pooling("auto", str(tmp_path)) == "mean"
    modes = {"pooling_mode_mean_tokens": True, "normalize": True, "pairs": True}  # tuned on pairs (ours)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(modes))
    assert resolve_pooling("auto", str(tmp_path), pairs=True) == "normalized-mean"
    model = load_for_task(str(tiny_backbone), "classification", ["a", "b"])
    model.config.model_type = "unknown-family"
    assert head_spec(model, "native") is None
    with pytest.raises(ValueError, match="not available for model type"):
        head_spec(model, "mean")


def test_layerwise_learning_rates(tiny_backbone):
    model = load_for_task(str(tiny_backbone), "classification", ["a", "b"])
    top = num_layers(model) + 1
    groups = layerwise_groups(model, head_spec(model), 1e-3, 0.5, 0.01)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    decay_of = {name: g["weight_decay"] for g in groups for name in g["names"]}
    assert lr_of["classifier.weight"] == pytest.approx(1e-3)
    assert lr_of["bert.pooler.dense.weight"] == pytest.approx(1e-3)
    assert lr_of["bert.encoder.layer.1.output.dense.weight"] == pytest.approx(1e-3 * 0.5)
    assert lr_of["bert.encoder.layer.0.output.dense.weight"] == pytest.approx(1e-3 * 0.25)
    assert lr_of["bert.embeddings.word_embeddings.weight"] == pytest.approx(1e-3 * 0.5**top)
    assert decay_of["bert.encoder.layer.0.output.LayerNorm.weight"] == 0.0 and decay_of["classifier.bias"] == 0.0
    assert decay_of["classifier.weight"] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_gradual_unfreezing_order():
    assert [sorted(unfrozen_depths(e, 3, 3)) for e in (1, 2, 3)] == [[2, 3], [1, 2, 3], [0, 1, 2, 3]]
    assert unfrozen_depths(1, 1, 7) == set(range(8))


def test_gradually_unfrozen_layers_learn_without_rebuilding_the_optimizer(tiny_backbone):
    model = load_for_task(str(tiny_backbone), "classification", ["0", "1"])
    spec = head_spec(model)
    frame = easy_sentiment(48, 0)
    encoded = encode(load_tokenizer(str(tiny_backbone)), frame["sentence"].tolist(), 16)
    targets = targets_tensor(frame["label"].to_numpy(), "classification")
    depths, top = depth_of_parameters(model, spec), num_layers(model) + 1
    optimizer = make_optimizer(layerwise_groups(model, spec, 1e-3, 0.9, 0.01), 1e-3)  # holds every layer
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def epoch(seed):
        settings = StepSettings("classification", optimizer, None, 16, 1.0, CPU)
        network_epoch(model, spec, encoded, targets, np.random.default_rng(seed), settings)

    apply_trainable_depths(model, depths, unfrozen_depths(1, 3, top))
    epoch(0)
    after_first = {k: v.clone() for k, v in model.state_dict().items()}
    assert not torch.equal(before["classifier.weight"], after_first["classifier.weight"])
    assert not torch.equal(
        before["bert.encoder.layer.1.output.dense.weight"], after_first["bert.encoder.layer.1.output.dense.weight"]
    )
    # still frozen: untouched, weight decay included
    assert torch.equal(
        before["bert.embeddings.word_embeddings.weight"], after_first["bert.embeddings.word_embeddings.weight"]
    )
    assert torch.equal(
        before["bert.encoder.layer.0.output.dense.weight"], after_first["bert.encoder.layer.0.output.dense.weight"]
    )
    apply_trainable_depths(model, depths, unfrozen_depths(3, 3, top))
    epoch(1)
    assert not torch.equal(
        after_first["bert.embeddings.word_embeddings.weight"],
        model.state_dict()["bert.embeddings.word_embeddings.weight"],
    )


def test_gradual_stage_runs_end_to_end(task_files, tiny_backbone):
    config = make_config(
        task_files, tiny_backbone, unfrozen={"epochs": 3, "learning_rate": 1e-3, "gradual": True}, keep_best=False
    )  # the last epoch, the only one with every layer unfrozen
    prepared = prepare_splits(config, task_files / "data")
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), task_files / "frozen"))
    result = unfrozen_stage.train_unfrozen(StageInputs(config, prepared, task_files / "frozen", task_files / "model"))
    assert result.epochs_run == 3
    assert not torch.equal(
        weights(task_files / "frozen")["bert.embeddings.word_embeddings.weight"],
        weights(task_files / "model")["bert.embeddings.word_embeddings.weight"],
    )


class Scalar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.value = torch.nn.Parameter(torch.zeros(1))


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    state, scores, seen = Scalar(), iter([0.5, 0.7, 0.6, 0.65, 0.9]), []

    def train_epoch(epoch):
        with torch.no_grad():
            state.value.fill_(epoch)
        return 0.0

    loop = EpochLoop(
        "unfrozen",
        5,
        10,
        "val_accuracy",
        True,
        patience=2,
        checkpointer=Checkpointer(tmp_path),
        on_epoch_end=lambda s, e, m: seen.append(e),
    )
    result = loop.run(state, train_epoch, lambda: {"accuracy": next(scores)})
    assert seen == [1, 2, 3, 4] and result.stopped_early and result.best_epoch == 2
    assert state.value.item() == 2.0  # the best epoch's weights, not the last
    assert len(list(tmp_path.glob("best-*.pt"))) == 1 and (tmp_path / "state.pt").is_file()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_reaches_the_same_model_as_an_uninterrupted_run(task_files, tiny_backbone, precision):
    config = make_config(task_files, tiny_backbone, precision=precision)
    prepared = prepare_splits(config, task_files / "data")
    straight = task_files / "straight"
    frozen_stage.train_frozen(
        StageInputs(config, prepared, str(tiny_backbone), straight / "frozen", None, straight / "ckpt")
    )
    expected = unfrozen_stage.train_unfrozen(
        StageInputs(config, prepared, straight / "frozen", straight / "model", None, straight / "ckpt")
    )

    run = task_files / "killed"
    with pytest.raises(Killed):
        frozen_stage.train_frozen(
            StageInputs(config, prepared, str(tiny_backbone), run / "frozen", kill_after("frozen", 2), run / "ckpt")
        )
    frozen_stage.train_frozen(
        StageInputs(config, prepared, str(tiny_backbone), run / "frozen", None, run / "ckpt", resume=True)
    )
    with pytest.raises(Killed):
        unfrozen_stage.train_unfrozen(
            StageInputs(config, prepared, run / "frozen", run / "model", kill_after("unfrozen", 1), run / "ckpt")
        )
    resumed = unfrozen_stage.train_unfrozen(
        StageInputs(config, prepared, run / "frozen", run / "model", None, run / "ckpt", resume=True)
    )

    assert resumed.resumed_after_epoch == 1
    assert expected.extra["dropout_masks"] == "numpy"  # the default on CPU: resuming redraws the same masks
    assert resumed.history == expected.history
    straight_weights, resumed_weights = weights(straight / "model"), weights(run / "model")
    assert all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)
    again = unfrozen_stage.train_unfrozen(
        StageInputs(config, prepared, run / "frozen", run / "model", None, run / "ckpt", resume=True)
    )
    assert again.history == expected.history  # a finished stage is not trained again


def test_strategies(task_files, tiny_backbone):
    full = make_config(task_files, tiny_backbone, strategy="full")
    prepared = prepare_splits(full, task_files / "data")
    assert (
        frozen_stage.train_frozen(
            StageInputs(full, prepared, str(tiny_backbone), task_files / "full-frozen")
        ).epochs_run
        == 0
    )
    probe = make_config(task_files, tiny_backbone, strategy="linear-probe")
    frozen_stage.train_frozen(StageInputs(probe, prepared, str(tiny_backbone), task_files / "probe-frozen"))
    result = unfrozen_stage.train_unfrozen(
        StageInputs(probe, prepared, task_files / "probe-frozen", task_files / "probe-model")
    )
    assert result.epochs_run == 0
    frozen, final = weights(task_files / "probe-frozen"), weights(task_files / "probe-model")
    assert all(torch.equal(frozen[k], final[k]) for k in frozen)
    with pytest.raises(Exception, match="linear-probe needs training.frozen.epochs > 0"):
        make_config(task_files, tiny_backbone, strategy="linear-probe", frozen={"epochs": 0, "learning_rate": 0.01})


def test_lora_trains_adapters_and_saves_a_merged_plain_model(task_files, tiny_backbone):
    config = make_config(
        task_files,
        tiny_backbone,
        strategy="lora",
        lora={"r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        unfrozen={"epochs": 2, "learning_rate": 5e-3},
    )
    prepared = prepare_splits(config, task_files / "data")
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), task_files / "frozen"))
    unfrozen_stage.train_unfrozen(StageInputs(config, prepared, task_files / "frozen", task_files / "model"))
    before, after = weights(task_files / "frozen"), weights(task_files / "model")
    assert set(before) == set(after)  # no adapter keys left: merged into the base weights
    query, key = "bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.0.attention.self.key.weight"
    assert not torch.equal(before[query], after[query]) and torch.equal(before[key], after[key])
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])  # the head trains too
    predictions = Predictor.load(task_files / "model").predict_texts(["a great film"])
    assert predictions["label"].iloc[0] in {"0", "1"}


def test_calibration_is_stored_with_the_model(task_files, tiny_backbone):
    config = make_config(task_files, tiny_backbone)
    prepared = prepare_splits(config, task_files / "data")
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), task_files / "frozen"))
    calibration = calibration_step.calibrate(config, prepared, task_files / "frozen")
    assert calibration["temperature"] > 0 and {"val_ece_before", "val_ece_after"} <= set(calibration)
    assert load_model_dir(task_files / "frozen")[2].temperature == pytest.approx(calibration["temperature"])
    metrics = evaluate_model(config, prepared, task_files / "frozen")
    assert {"ece", "ece_uncalibrated"} <= set(metrics)


def test_a_given_temperature_is_stored_not_fitted(task_files, tiny_backbone):
    """``training.temperature`` (a sweep's winner trained on its validation rows) is stored as it is."""
    config = make_config(task_files, tiny_backbone)
    prepared = prepare_splits(config, task_files / "data")
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), task_files / "frozen"))
    given = config.model_copy(update={"training": config.training.model_copy(update={"temperature": 1.7})})
    calibration = calibration_step.calibrate(given, prepared, task_files / "frozen")
    assert calibration == {"temperature": 1.7, "temperature_given": 1.0}
    assert load_model_dir(task_files / "frozen")[2].temperature == 1.7
    metrics = evaluate_model(given, prepared, task_files / "frozen")
    assert metrics["ece"] != metrics["ece_uncalibrated"]  # the served probabilities use it
