"""`training.frozen.max_rows`: when stage 2 follows, the frozen stage fits its head on the features
of a seeded, stratified sample of train (by default only under a stage-2 time budget); stage 2
still trains on every row. With blocks frozen, the other rows fill the layer cache by a pass that
stops after those blocks."""

import numpy as np
import torch

from finetune_core.config.sections import TrainingConfig
from finetune_core.data.prepare import prepare_splits
from finetune_core.model.batching import Encoded, take_encoded
from finetune_core.model.features import known_within
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.recipe import HEAD_ROWS_UNDER_BUDGET, head_rows
from finetune_core.training.stage_setup import StageInputs
from tests.training.stage_helpers import easy_task_config, write_easy_task


def _training(**sections):
    return TrainingConfig.model_validate(sections)


class _Classes:
    task = "classification"


def test_the_default_keeps_every_row_without_a_budget_and_samples_under_one():
    targets = np.repeat([0, 1, 2], [4000, 800, 200])

    assert head_rows(_training(), _Classes, targets, 0) is None
    sample = head_rows(_training(unfrozen={"max_minutes": 5}), _Classes, targets, 0)

    assert len(sample) == HEAD_ROWS_UNDER_BUDGET and np.all(np.diff(sample) > 0)
    shares = np.bincount(targets[sample]) / HEAD_ROWS_UNDER_BUDGET
    np.testing.assert_allclose(shares, [0.8, 0.16, 0.04], atol=1e-3)  # stratified


def test_no_sample_without_stage_two_or_when_train_is_smaller():
    targets = np.zeros(500, dtype=np.int64)
    capped = _training(frozen={"max_rows": 100})

    assert head_rows(capped, _Classes, targets, None) is None  # stage 2 does not run: the head is the model
    assert len(head_rows(capped, _Classes, targets, 0)) == 100
    assert len(head_rows(capped, _Classes, targets, 2)) == 100  # the rest pass through the frozen blocks only
    assert head_rows(_training(frozen={"max_rows": 500}), _Classes, targets, 0) is None


def test_take_encoded_keeps_ids_and_segments_of_the_rows_asked_for():
    encoded = Encoded(input_ids=[[1], [2, 3], [4, 5, 6]], pad_id=0, token_type_ids=[[0], [0, 1], [0, 1, 1]])

    taken = take_encoded(encoded, np.array([2, 0]))

    assert taken.input_ids == [[4, 5, 6], [1]] and taken.token_type_ids == [[0, 1, 1], [0]]


def test_known_features_are_renumbered_into_the_sample():
    known = (np.array([1, 4, 7]), torch.tensor([[1.0], [4.0], [7.0]]))

    indexes, values = known_within(known, np.array([0, 4, 5, 7]))

    assert indexes.tolist() == [1, 3] and values.flatten().tolist() == [4.0, 7.0]


def test_the_head_fits_on_the_sample_and_stage_two_trains_on_every_row(tmp_path, tiny_backbone):
    files = write_easy_task(tmp_path, 160, 40)
    training = {
        "frozen": {"epochs": 2, "learning_rate": 1e-2, "max_rows": 48},
        "unfrozen": {"epochs": 1, "learning_rate": 1e-3},
        "batch_size": 16,
        "max_length": 16,
    }
    config = easy_task_config(files, tiny_backbone, training)
    prepared = prepare_splits(config, files / "data")

    frozen = frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), files / "frozen"))
    unfrozen = unfrozen_stage.train_unfrozen(StageInputs(config, prepared, files / "frozen", files / "model"))

    assert frozen.extra["head_rows"] == 48 and frozen.train_examples == 48
    assert unfrozen.train_examples == prepared.rows["train"] > 48


def test_with_frozen_blocks_the_sampled_pass_and_the_lower_pass_fill_the_same_layer_cache(tmp_path, tiny_backbone):
    files = write_easy_task(tmp_path, 160, 40)
    training = {"frozen": {"epochs": 1}, "unfrozen": {"epochs": 1, "freeze_layers": 1}, "feature_cache": False}
    caches = {}
    for name, frozen in (("sampled", {"epochs": 1, "max_rows": 48}), ("every", {"epochs": 1})):
        config = easy_task_config(files, tiny_backbone, {**training, "frozen": frozen})
        prepared = prepare_splits(config, files / "data")
        result = frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), files / name / "frozen"))
        caches[name] = {p.name: np.load(p) for p in (files / name / "layer-cache").glob("*.npy")}
        assert result.extra.get("head_rows") == (48 if name == "sampled" else None)
        assert result.extra["layer_caches_written"] == 2

    assert caches["sampled"].keys() == caches["every"].keys() and len(caches["every"]) == 2
    for name, states in caches["every"].items():  # every row, each where its own pass put it
        np.testing.assert_allclose(caches["sampled"][name], states, atol=2e-3)
        assert np.abs(states).sum(axis=1).min() > 0
