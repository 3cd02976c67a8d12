"""Stage 2 with the embeddings and lowest blocks frozen (``training.unfrozen.freeze_layers``): the
lower weights stay bit-identical, the upper ones learn, the lower blocks' outputs are cached once
(in the frozen stage's features pass) and reused by every epoch and on resume; LoRA, gradual
unfreezing and DDP work with it; a bad value is a configuration error naming the field."""

import pytest
import torch

from finetune_core.data.prepare import prepare_splits
from finetune_core.errors import ConfigError
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.checkpoint import STATE
from finetune_core.training.stage_setup import StageInputs
from tests.training.stage_helpers import Killed, easy_task_config, kill_after, weights, write_easy_task

LOWER = ("bert.embeddings.", "bert.encoder.layer.0.")


@pytest.fixture
def files(tmp_path):
    return write_easy_task(tmp_path, 160, 60)


def _config(files, backbone, **overrides):
    unfrozen = {"epochs": 2, "learning_rate": 2e-3, "warmup_ratio": 0.0, "freeze_layers": 1}
    unfrozen.update(overrides.pop("unfrozen", {}))
    training = {
        "frozen": {"epochs": 2, "learning_rate": 1e-2},
        "unfrozen": unfrozen,
        "batch_size": 16,
        "max_length": 16,
        "cache_dir": str(files / "cache"),
        **overrides,
    }
    return easy_task_config(files, backbone, training)


def _run(config, files, tag, checkpoints=None, resume=False, on_epoch_end=None):
    prepared = prepare_splits(config, files / "data")
    backbone = config.backbone.candidates[0]
    frozen = frozen_stage.train_frozen(StageInputs(config, prepared, backbone, files / f"frozen-{tag}", resume=resume))
    unfrozen = unfrozen_stage.train_unfrozen(
        StageInputs(
            config,
            prepared,
            files / f"frozen-{tag}",
            files / f"model-{tag}",
            on_epoch_end=on_epoch_end,
            checkpoints=checkpoints,
            resume=resume,
        )
    )
    return prepared, frozen, unfrozen


def _assert_lower_unchanged_upper_learned(files, tag, lower=LOWER):
    before, after = weights(files / f"frozen-{tag}"), weights(files / f"model-{tag}")
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert not {n for n in changed if n.startswith(lower)}, "a frozen weight changed"
    assert any(n.startswith("bert.encoder.layer.1.") for n in changed), "the upper block did not learn"


def test_lower_layers_stay_bit_identical_and_the_cache_comes_from_the_features_pass(files, tiny_backbone):
    config = _config(files, tiny_backbone)  # the default precision (auto) and thread settings
    prepared, frozen, unfrozen = _run(config, files, "a")
    assert frozen.extra["layer_caches_written"] == 2  # train and validation, in the features pass
    assert unfrozen.extra["layer_cache_hits"] == 2 and unfrozen.extra["freeze_layers"] == 1
    assert unfrozen.extra["layer_cache_bytes_per_row"] > 0
    assert unfrozen.epochs_run == 2 and unfrozen.history[-1]["train_loss"] < unfrozen.history[0]["train_loss"]
    _assert_lower_unchanged_upper_learned(files, "a")
    assert 0 <= evaluate_model(config, prepared, files / "model-a")["accuracy"] <= 1  # the full model serves
    caches = sorted((files / "cache").glob("*.layer1.npy"))
    assert len(caches) == 2


def test_negative_freeze_layers_count_from_the_top_and_gradual_stays_above(files, tiny_backbone):
    unfrozen = {"freeze_layers": -1, "gradual": True, "epochs": 2}
    config = _config(files, tiny_backbone, keep_best=False, unfrozen=unfrozen)  # the last epoch trains block 1
    _, _, unfrozen = _run(config, files, "g")
    assert unfrozen.extra["freeze_layers"] == 1  # 2 blocks, all but the top one
    _assert_lower_unchanged_upper_learned(files, "g")


def test_resume_reuses_the_cache_and_matches_an_uninterrupted_run(files, tiny_backbone):
    config = _config(files, tiny_backbone, precision="fp32", unfrozen={"epochs": 3})
    _run(config, files, "whole", checkpoints=files / "ck-whole")
    caches = {p: p.stat().st_mtime_ns for p in (files / "cache").glob("*.layer1.npy")}
    with pytest.raises(Killed):
        _run(config, files, "cut", checkpoints=files / "ck-cut", on_epoch_end=kill_after("unfrozen", 2))
    _, _, resumed = _run(config, files, "cut", checkpoints=files / "ck-cut", resume=True)
    assert resumed.resumed_after_epoch == 2 and resumed.extra["layer_cache_hits"] == 2
    assert {p: p.stat().st_mtime_ns for p in (files / "cache").glob("*.layer1.npy")} == caches  # not recomputed
    whole, cut = weights(files / "model-whole"), weights(files / "model-cut")
    for name, value in whole.items():
        assert torch.equal(value, cut[name]), name


def test_blocks_that_train_first_freeze_after_an_epoch_and_resume_across_the_switch(files, tiny_backbone):
    """``freeze_after_epochs: 1``: epoch 1 trains every block (stage 1 fills no cache: those weights
    are about to change), then the lowest freeze, their states computed once into the run's cache;
    a run killed at the switch resumes to the same weights as one that was not."""
    # default precision; keep_best off, so the final weights are the last epoch's, past the switch
    config = _config(files, tiny_backbone, keep_best=False, unfrozen={"epochs": 3, "freeze_after_epochs": 1})
    _, frozen, whole = _run(config, files, "whole")
    assert "layer_caches_written" not in frozen.extra
    assert whole.extra["freeze_after_epochs"] == 1 and whole.extra["layer_cache_hits"] == 0
    assert whole.extra["layer_cache_seconds"] > 0 and whole.extra["layer_cache_bytes_per_row"] > 0
    # keyed by weights no other run has: in the run directory, not the shared cache, and gone when done
    assert (files / "layer-cache").is_dir() and not list((files / "layer-cache").glob("*.npy"))
    assert not list((files / "cache").glob("*.layer1.npy"))
    with pytest.raises(Killed):
        _run(config, files, "cut", checkpoints=files / "ck", on_epoch_end=kill_after("unfrozen", 1))
    after_one = torch.load(files / "ck" / "unfrozen" / STATE, weights_only=False)["model"]
    _, _, resumed = _run(config, files, "cut", checkpoints=files / "ck", resume=True)
    assert resumed.resumed_after_epoch == 1 and resumed.extra["freeze_layers"] == 1
    before, final, cut = weights(files / "frozen-whole"), weights(files / "model-whole"), weights(files / "model-cut")
    block0 = [n for n in final if n.startswith("bert.encoder.layer.0.")]
    assert any(not torch.equal(before[n], final[n]) for n in block0), "block 0 did not train in epoch 1"
    assert all(torch.equal(after_one[n], cut[n]) for n in block0), "block 0 changed after the switch"
    assert any(not torch.equal(after_one[n], cut[n]) for n in cut if n.startswith("bert.encoder.layer.1."))
    for name, value in final.items():
        assert torch.equal(value, cut[name]), name


def test_freezing_later_with_gradual_unfreezing_is_a_config_error(files, tiny_backbone):
    config = _config(files, tiny_backbone, unfrozen={"freeze_after_epochs": 1, "gradual": True})
    with pytest.raises(ConfigError, match=r"training\.unfrozen\.freeze_after_epochs: .*gradual"):
        _run(config, files, "gradual-later")


def test_strategy_full_fills_the_cache_in_stage_two_once(files, tiny_backbone):
    config = _config(files, tiny_backbone, strategy="full", feature_cache=False)
    _, frozen, unfrozen = _run(config, files, "full")
    assert "layer_caches_written" not in frozen.extra and unfrozen.extra["layer_cache_hits"] == 0
    assert len(list((files / "layer-cache").glob("*.layer1.npy"))) == 2  # in the run directory: no feature cache
    prepared = prepare_splits(config, files / "data")
    again = unfrozen_stage.train_unfrozen(StageInputs(config, prepared, files / "frozen-full", files / "model-full-2"))
    assert again.extra["layer_cache_hits"] == 2
    _assert_lower_unchanged_upper_learned(files, "full")


@pytest.mark.parametrize("later", [0, 1])
def test_lora_adapters_only_above_the_frozen_blocks(files, tiny_backbone, later):
    """With ``freeze_after_epochs`` the lower blocks' adapters train first: merged into their
    weights, which then differ from the backbone's."""
    unfrozen = {"learning_rate": 1e-2, "epochs": 2 + later, "freeze_after_epochs": later}
    config = _config(files, tiny_backbone, strategy="lora", unfrozen=unfrozen)
    _, _, unfrozen = _run(config, files, "lora")
    assert unfrozen.extra["layer_cache_hits"] == (0 if later else 2) and unfrozen.extra["freeze_layers"] == 1
    before, after = weights(files / "frozen-lora"), weights(files / "model-lora")
    assert before.keys() == after.keys()  # merged into a plain model: no adapter weights left
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert bool({n for n in changed if n.startswith(LOWER)}) == bool(later)
    assert any(n.startswith("bert.encoder.layer.1.attention.self.query") for n in changed)


@pytest.mark.parametrize("value", [3, -3])
def test_more_blocks_than_the_backbone_has_is_a_config_error(files, tiny_backbone, value):
    config = _config(files, tiny_backbone, unfrozen={"freeze_layers": value})
    prepared = prepare_splits(config, files / "data")
    with pytest.raises(ConfigError, match=r"training\.unfrozen\.freeze_layers: .*2 transformer blocks"):
        frozen_stage.train_frozen(
            StageInputs(config, prepared, str(tiny_backbone), files / "frozen-bad")
        )  # before any training


def test_every_block_frozen_trains_the_pooler_and_head_only(files, tiny_backbone):
    config = _config(files, tiny_backbone)
    config.training.unfrozen.freeze_layers = 2
    _, _, unfrozen = _run(config, files, "all")
    before, after = weights(files / "frozen-all"), weights(files / "model-all")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(n.startswith(("bert.pooler.", "classifier.")) for n in changed)
    assert unfrozen.extra["freeze_layers"] == 2


@pytest.mark.parametrize("after", [0, 1])
def test_two_processes_with_frozen_lower_blocks_match_one(files, tiny_backbone, after):
    """DDP over the upper blocks (after one epoch over every block: the wrapper is rebuilt at the
    switch): the same batches, so per-epoch losses match one process."""
    import shutil

    from transformers import BertConfig

    backbone = shutil.copytree(tiny_backbone, files / "no-dropout")  # ranks would draw different masks
    bert = BertConfig.from_pretrained(backbone)
    bert.hidden_dropout_prob = bert.attention_probs_dropout_prob = 0.0
    bert.save_pretrained(backbone)
    results = {}
    for processes in (1, 2):
        unfrozen = {"epochs": 2 + after, "freeze_after_epochs": after}
        config = _config(files, backbone, precision="fp32", num_processes=processes, unfrozen=unfrozen)
        _, _, results[processes] = _run(config, files, f"ddp{processes}")
    assert results[2].extra["num_processes"] == 2 and results[2].extra["freeze_after_epochs"] == after
    assert after or results[2].extra["layer_cache_hits"] == 2  # after 1: the ranks' own cache of trained blocks
    for one, two in zip(results[1].history, results[2].history, strict=True):
        assert abs(one["train_loss"] - two["train_loss"]) < 1e-4
    if not after:
        _assert_lower_unchanged_upper_learned(files, "ddp2")


@pytest.mark.parametrize("gradual", [False, True])
def test_freeze_word_embeddings_keeps_the_token_matrix_and_trains_the_rest(files, tiny_backbone, gradual):
    # freeze_layers 0 (every block trains) and the default precision; gradual unfreezing re-enables
    # parameters by depth each epoch and must not re-enable the token matrix.
    unfrozen = {"freeze_layers": 0, "freeze_word_embeddings": True, "gradual": gradual}
    config = _config(files, tiny_backbone, keep_best=False, unfrozen=unfrozen)
    _, _, result = _run(config, files, f"w{gradual}")
    before, after = weights(files / f"frozen-w{gradual}"), weights(files / f"model-w{gradual}")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert "bert.embeddings.word_embeddings.weight" not in changed
    assert (
        "bert.embeddings.position_embeddings.weight" in changed
        and "bert.encoder.layer.0.output.dense.weight" in changed
    )
    assert "layer_cache_hits" not in result.extra  # no partial freeze: the full model runs each step
