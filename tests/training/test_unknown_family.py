"""A backbone family missing from the head table (finetune_core/model/heads.py) still trains: the
frozen stage runs full forward passes with the backbone frozen and trains the model's own head,
stage 2 trains everything, and the saved model serves."""

import torch
from transformers import MPNetModel

from finetune_core.data.prepare import prepare_splits
from finetune_core.evaluation.held_out_metrics import evaluate_model
from finetune_core.model.heads import HEADS
from finetune_core.serving.predictor import Predictor, load_model_dir
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.stage_setup import StageInputs
from tests.training.stage_helpers import easy_task_config, write_easy_task


def _tiny_mpnet(directory, tiny_backbone):
    from transformers import AutoTokenizer, MPNetConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)  # a BERT word-piece vocabulary
    tokenizer.save_pretrained(directory)
    config = MPNetConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    MPNetModel(config).save_pretrained(directory)
    return directory


def test_a_family_without_a_head_entry_trains_both_stages_and_serves(tmp_path, tiny_backbone):
    backbone = _tiny_mpnet(tmp_path / "mpnet", tiny_backbone)
    files = write_easy_task(tmp_path, 240, 80)
    training = {
        "strategy": "lp-ft",
        "frozen": {"epochs": 2, "learning_rate": 1e-2},
        "unfrozen": {"epochs": 5, "learning_rate": 2e-3, "warmup_ratio": 0.0, "layer_lr_decay": 1.0},
        "batch_size": 16,
        "max_length": 16,
    }
    config = easy_task_config(files, backbone, training)
    prepared = prepare_splits(config, files / "data")
    assert "mpnet" not in HEADS  # the family really is unknown to the head table

    frozen = frozen_stage.train_frozen(StageInputs(config, prepared, str(backbone), files / "frozen"))
    after_frozen = load_model_dir(files / "frozen")[0].state_dict()
    pretrained = MPNetModel.from_pretrained(backbone).state_dict()
    shared = [name for name in pretrained if f"mpnet.{name}" in after_frozen]  # not the pooler the head replaces
    assert any(".layer.0." in name for name in shared)
    for name in shared:  # the backbone did not move in stage 1
        assert torch.equal(after_frozen[f"mpnet.{name}"], pretrained[name]), name
    assert "feature_seconds" not in frozen.extra  # full forward passes, no cached features
    unfrozen = unfrozen_stage.train_unfrozen(StageInputs(config, prepared, files / "frozen", files / "model"))

    assert unfrozen.history[-1]["train_loss"] < unfrozen.history[0]["train_loss"]
    assert evaluate_model(config, prepared, files / "model")["accuracy"] >= 0.9
    predictions = Predictor.load(files / "model").predict_texts(["a great film", "an awful film"])
    assert len(predictions) == 2
