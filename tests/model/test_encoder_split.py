"""The upper part of an encoder (blocks N..L, pooling, head) on the lower blocks' output equals
the full model's forward, for every split point, pooling and supported family; the layer cache
stores unpadded rows and gives them back padded."""

import numpy as np
import pytest
import torch

from finetune_core.errors import ConfigError
from finetune_core.model.batching import encode
from finetune_core.model.encoder_split import (
    frozen_parameter_names,
    lower_hidden_states,
    resolve_freeze_layers,
    upper_spec,
)
from finetune_core.model.heads import forward_logits, head_spec
from finetune_core.model.layer_cache import cached_layer_states

TEXTS = ["a gorgeous, witty film", "dull", "the plot is a mess and the acting is no better", "fine"]


def _bert(tiny_backbone):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=2).eval()
    return model, AutoTokenizer.from_pretrained(tiny_backbone)


def _roberta():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    return RobertaForSequenceClassification(config).eval()


def _batch(tokenizer):
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("pooling", ["native", "mean", "cls", "normalized-mean", "normalized-cls"])
def test_upper_part_equals_the_full_forward_at_every_split(tiny_backbone, pooling):
    model, tokenizer = _bert(tiny_backbone)
    batch = _batch(tokenizer)
    spec = head_spec(model, pooling)
    with torch.no_grad():
        full = forward_logits(model, spec, batch)
        for frozen in range(1, model.config.num_hidden_layers + 1):
            hidden = lower_hidden_states(model, batch, frozen)
            cached = {"hidden_states": hidden, "attention_mask": batch["attention_mask"]}
            upper = forward_logits(model, upper_spec(spec, pooling, frozen), cached)
            torch.testing.assert_close(upper, full, rtol=1e-5, atol=1e-6)


def test_roberta_family_is_supported_too():
    model = _roberta()
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]])
    batch = {"input_ids": ids, "attention_mask": (ids != 1).long()}
    spec = head_spec(model, "native")
    with torch.no_grad():
        full = forward_logits(model, spec, batch)
        for frozen in (1, 2, 3):
            cached = {
                "hidden_states": lower_hidden_states(model, batch, frozen),
                "attention_mask": batch["attention_mask"],
            }
            torch.testing.assert_close(forward_logits(model, upper_spec(spec, "native", frozen), cached), full)


def test_freeze_layers_resolution_and_errors(tiny_backbone):
    model, _ = _bert(tiny_backbone)  # 2 blocks
    assert [resolve_freeze_layers(n, model) for n in (0, 1, 2, -1, -2)] == [0, 1, 2, 1, 0]
    for bad in (3, -3):
        with pytest.raises(ConfigError, match="training.unfrozen.freeze_layers"):
            resolve_freeze_layers(bad, model)
    names = frozen_parameter_names(model, 1)
    assert any(".embeddings." in n for n in names) and any(".layer.0." in n for n in names)
    assert not any(".layer.1." in n or "classifier" in n or "pooler" in n for n in names)


def test_unsupported_family_is_a_config_error():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64))
    with pytest.raises(ConfigError, match="training.unfrozen.freeze_layers.*distilbert"):
        resolve_freeze_layers(1, model)
    assert resolve_freeze_layers(0, model) == 0


def test_layer_cache_round_trip_is_unpadded_float16(tiny_backbone, tmp_path):
    model, tokenizer = _bert(tiny_backbone)
    encoded = encode(tokenizer, TEXTS, 32)
    path = tmp_path / "cache.layer1.npy"
    cache, hit = cached_layer_states(model, 1, encoded, path, 2, "cpu", _no_autocast)
    assert not hit and path.is_file()
    assert cache.states.dtype == np.float16
    assert cache.states.shape == (int(encoded.lengths.sum()), model.config.hidden_size)  # no padding stored
    assert cache.bytes_per_row == 2 * model.config.hidden_size * encoded.lengths.mean()
    again, hit = cached_layer_states(model, 1, encoded, path, 2, "cpu", _no_autocast)
    assert hit
    rows = np.array([2, 0])
    batch = again.batch(rows, pad_to=8)
    assert batch["hidden_states"].shape[1] % 8 == 0
    with torch.no_grad():
        reference = lower_hidden_states(model, _batch(tokenizer), 1)
    for r, row in enumerate(rows):
        length = encoded.lengths[row]
        torch.testing.assert_close(batch["hidden_states"][r, :length], reference[row, :length], rtol=2e-3, atol=2e-3)
        assert batch["attention_mask"][r].sum() == length
        assert not batch["hidden_states"][r, length:].any()


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


def test_a_features_pass_fills_the_cache_and_the_lower_pass_the_rest(tiny_backbone, tmp_path):
    """The frozen stage taps its features pass; rows it did not compute (selection's, a feature-cache
    hit) come from a pass that stops after the frozen blocks: together, the same cache."""
    from finetune_core.model.batching import collate
    from finetune_core.model.encoder_split import block_output
    from finetune_core.model.layer_cache import LayerWriter

    model, tokenizer = _bert(tiny_backbone)
    encoded = encode(tokenizer, TEXTS, 32)
    writer = LayerWriter(tmp_path / "tapped.layer1.npy", encoded, model.config.hidden_size)
    rows = np.array([3, 1])
    with block_output(model, 1) as captured, torch.no_grad():
        inputs = collate(encoded, rows)
        head_spec(model, "mean").features(model, inputs)
        writer.tap(captured)(rows, inputs)
    assert writer.written.tolist() == [False, True, False, True]
    writer.fill(model, 1, 2, "cpu", _no_autocast)
    tapped = writer.commit()
    reference, _ = cached_layer_states(model, 1, encoded, tmp_path / "lower.layer1.npy", 4, "cpu", _no_autocast)
    np.testing.assert_allclose(tapped.states.astype(np.float32), reference.states.astype(np.float32), atol=2e-3)
    assert not list(tmp_path.glob("*.tmp"))
