"""Stage-2 adjustments of a loaded model: the dropout rate reaches every dropout layer (attention
included), the token-embedding matrix alone stops learning; and in stage 2 the saved model keeps
the checkpoint's own dropout config."""

import torch

from finetune_core.model.embedding_and_dropout import freeze_word_embeddings, set_dropout
from finetune_core.serving.predictor import load_model_dir
from tests.training.stage_helpers import weights, write_easy_task
from tests.training.test_freeze_layers import _config, _run


def _model(tiny_backbone, dropout=0.3):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(
        tiny_backbone, num_labels=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout
    ).train()


def test_dropout_zero_makes_training_mode_deterministic(tiny_backbone):
    model = _model(tiny_backbone)
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    inputs = {"input_ids": ids, "attention_mask": (ids > 0).long()}
    assert not torch.equal(model(**inputs).logits, model(**inputs).logits)  # dropout on
    assert set_dropout(model, 0.0) > 0
    assert torch.equal(model(**inputs).logits, model(**inputs).logits)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_freeze_word_embeddings_freezes_only_the_token_matrix(tiny_backbone):
    model = _model(tiny_backbone)
    assert freeze_word_embeddings(model) == {"bert.embeddings.word_embeddings.weight"}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"bert.embeddings.word_embeddings.weight"}


def test_stage_two_dropout_is_for_training_only(tmp_path, tiny_backbone):
    files = write_easy_task(tmp_path, 160, 60)
    config = _config(files, tiny_backbone, unfrozen={"freeze_layers": 0, "dropout": 0.0})  # default precision
    _, _, result = _run(config, files, "d")
    assert result.epochs_run == 2
    _run(_config(files, tiny_backbone, unfrozen={"freeze_layers": 0}), files, "kept")  # the checkpoint's rate
    after, kept = weights(files / "model-d"), weights(files / "model-kept")
    assert any(not torch.equal(after[name], kept[name]) for name in after)  # the rate took effect
    model, _, _ = load_model_dir(files / "model-d")
    from transformers import AutoConfig

    assert model.config.hidden_dropout_prob == AutoConfig.from_pretrained(tiny_backbone).hidden_dropout_prob > 0
