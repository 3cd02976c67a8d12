"""The freeze policy of stage 2 on a tiny 2-block BERT: which parameters require grad at each epoch
in each mode (none frozen, frozen from the start, frozen after N epochs, gradual), the settings it
resolves from the config, and its state's round trip (what a resumed stage restores)."""

import pytest

from finetune_core.errors import ConfigError
from finetune_core.model.backbone import load_for_task
from finetune_core.model.heads import head_spec, num_layers
from finetune_core.training.freeze_policy import FreezePolicy
from finetune_core.training.optim import depth_of_parameters
from tests.training.stage_helpers import easy_task_config, write_easy_task

LOWER = ("bert.embeddings.", "bert.encoder.layer.0.")
WORDS = "bert.embeddings.word_embeddings.weight"


@pytest.fixture
def files(tmp_path):
    return write_easy_task(tmp_path, 8, 4)


def _policy(files, backbone, **unfrozen):
    config = easy_task_config(files, backbone, {"unfrozen": {"epochs": 3, **unfrozen}})
    model = load_for_task(str(backbone), "classification", ["0", "1"])
    return FreezePolicy.from_config(config, model), model


def _epochs(policy, model):
    """Per epoch: (the lower blocks froze at its start, the names that require grad during it)."""
    depths, top = depth_of_parameters(model, head_spec(model)), num_layers(model) + 1
    policy.freeze_before_training(model)
    seen = []
    for epoch in range(1, policy.epochs + 1):
        froze = policy.on_epoch_start(epoch, model, model, depths, top)
        seen.append((froze, {n for n, p in model.named_parameters() if p.requires_grad}))
    return seen


def _lower(names):
    return {n for n in names if n.startswith(LOWER)}


def test_none_frozen_trains_every_parameter_every_epoch(files, tiny_backbone):
    policy, model = _policy(files, tiny_backbone)
    assert policy.mode == "none" and policy.frozen_from_start == 0
    every = {n for n, _ in model.named_parameters()}
    assert _epochs(policy, model) == [(False, every)] * 3


def test_frozen_from_the_start_never_trains_the_lower_blocks(files, tiny_backbone):
    policy, model = _policy(files, tiny_backbone, freeze_layers=1)
    assert policy.mode == "from-start" and policy.frozen_from_start == 1 and policy.lower_frozen
    for froze, training in _epochs(policy, model):
        assert not froze and not _lower(training)
        assert any(n.startswith("bert.encoder.layer.1.") for n in training) and "classifier.weight" in training
    assert policy.frozen_names == {n for n, _ in model.named_parameters() if n.startswith(LOWER)}


def test_frozen_after_n_epochs_trains_them_first_then_freezes_them_once(files, tiny_backbone):
    policy, model = _policy(files, tiny_backbone, freeze_layers=1, freeze_after_epochs=1)
    assert policy.mode == "after-epochs" and policy.frozen_from_start == 0
    (froze1, first), (froze2, second), (froze3, third) = _epochs(policy, model)
    assert not froze1 and _lower(first) == {n for n, _ in model.named_parameters() if n.startswith(LOWER)}
    assert froze2 and not _lower(second)  # the switch to the layer cache
    assert not froze3 and third == second


def test_freezing_after_every_epoch_means_never(files, tiny_backbone):
    policy, _ = _policy(files, tiny_backbone, freeze_layers=1, freeze_after_epochs=3)
    assert policy.mode == "none" and policy.frozen == 0


def test_gradual_unfreezes_top_down_and_everything_by_the_last_epoch(files, tiny_backbone):
    policy, model = _policy(files, tiny_backbone, gradual=True)
    assert policy.mode == "gradual"
    every = {n for n, _ in model.named_parameters()}
    (_, first), (_, second), (_, third) = _epochs(policy, model)
    assert "classifier.weight" in first and WORDS not in first and not any(".layer.0." in n for n in first)
    assert first < second < third == every


def test_gradual_above_frozen_blocks_never_reaches_them(files, tiny_backbone):
    policy, model = _policy(files, tiny_backbone, gradual=True, freeze_layers=1)
    for _, training in _epochs(policy, model):
        assert not _lower(training)


def test_the_word_embeddings_stay_frozen_when_asked(files, tiny_backbone):
    policy, model = _policy(files, tiny_backbone, freeze_word_embeddings=True)
    assert all(WORDS not in training for _, training in _epochs(policy, model))


def test_freezing_later_with_gradual_is_a_config_error(files, tiny_backbone):
    with pytest.raises(ConfigError, match=r"freeze_after_epochs: .*gradual"):
        _policy(files, tiny_backbone, freeze_layers=1, freeze_after_epochs=1, gradual=True)


def test_linear_probe_has_no_stage_two(files, tiny_backbone):
    config = easy_task_config(files, tiny_backbone, {"strategy": "linear-probe", "unfrozen": {"freeze_layers": 1}})
    policy = FreezePolicy.from_config(config, load_for_task(str(tiny_backbone), "classification", ["0", "1"]))
    assert not policy.runs and policy.frozen == 0


def test_the_state_round_trips_and_a_resume_past_the_switch_freezes_the_fresh_model(files, tiny_backbone):
    policy, model = _policy(files, tiny_backbone, freeze_layers=1, freeze_after_epochs=1)
    _epochs(policy, model)
    state = policy.state_dict()
    assert state == {"epoch": 3} and policy.lower_frozen

    resumed, fresh = _policy(files, tiny_backbone, freeze_layers=1, freeze_after_epochs=1)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state and resumed.lower_frozen
    resumed.freeze_before_training(fresh)
    assert _lower({n for n, p in fresh.named_parameters() if p.requires_grad})  # the fresh model: not yet
    depths, top = depth_of_parameters(fresh, head_spec(fresh)), num_layers(fresh) + 1
    assert resumed.on_epoch_start(3, fresh, fresh, depths, top)  # the first resumed epoch freezes them
    assert not _lower({n for n, p in fresh.named_parameters() if p.requires_grad})
