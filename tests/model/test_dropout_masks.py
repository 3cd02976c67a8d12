"""Stage 2's dropout masks from NumPy (``dropout_masks.STAGE_MASKS``, fixed on CPU): the same
Bernoulli dropout in distribution, gradients through the kept elements only, reproducible from
torch's seed, and swapped into a model without changing what it computes in eval mode or what it
saves."""

from __future__ import annotations

import pytest
import torch

from finetune_core.model.dropout_masks import NumpyMaskDropout, use_numpy_masks
from finetune_core.model.embedding_and_dropout import set_dropout
from tests.tiny_models import build_tiny_bert

ROWS = 200_000


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_the_drop_rate_and_the_expectation_match_dropout(rate):
    torch.manual_seed(0)
    out = NumpyMaskDropout(rate).train()(torch.ones(ROWS))
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - rate) < 4 * (rate * (1 - rate) / ROWS) ** 0.5  # four standard errors
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, kept[0].item()))  # one scale for every kept value
    assert kept[0].item() == pytest.approx(1 / (1 - rate), rel=1e-4)
    assert abs(out.double().mean().item() - 1) < 0.01


def test_gradients_flow_through_the_kept_elements_only():
    x = torch.randn(64, 48, requires_grad=True)
    out = NumpyMaskDropout(0.3).train()(x)
    out.sum().backward()
    kept = out != 0
    assert torch.equal(x.grad == 0, ~kept)
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], out[kept][0].item() / x[kept][0].item()))


def test_masks_follow_torchs_seed_and_differ_call_to_call():
    layer, x = NumpyMaskDropout(0.1).train(), torch.ones(4096)
    torch.manual_seed(7)
    first, second = layer(x), layer(x)
    torch.manual_seed(7)
    assert torch.equal(layer(x), first) and not torch.equal(first, second)
    state = torch.get_rng_state()  # a resumed run restores torch's state: the next mask is the same
    expected = layer(x)
    torch.set_rng_state(state)
    assert torch.equal(layer(x), expected)


def test_eval_mode_and_a_zero_rate_leave_the_input_alone():
    x = torch.randn(32, 16)
    assert torch.equal(NumpyMaskDropout(0.1).eval()(x), x)
    assert torch.equal(NumpyMaskDropout(0.0).train()(x), x)
    assert torch.equal(NumpyMaskDropout(1.0).train()(x), torch.zeros_like(x))


def test_a_swapped_model_computes_and_saves_as_before(tmp_path):
    from transformers import AutoModelForSequenceClassification

    directory = build_tiny_bert(tmp_path / "tiny", ["a small corpus of words", "for a tiny model"])
    model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=2).eval()
    plain = [m for m in model.modules() if type(m) is torch.nn.Dropout]
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    before, keys = model(input_ids=ids).logits, set(model.state_dict())

    assert use_numpy_masks(model) == len(plain) > 0
    assert not [m for m in model.modules() if type(m) is torch.nn.Dropout]
    assert torch.equal(model(input_ids=ids).logits, before) and set(model.state_dict()) == keys
    assert set_dropout(model, 0.25) == len(plain)  # attention still reads the swapped modules' rate
    assert all(m.p == 0.25 for m in model.modules() if isinstance(m, NumpyMaskDropout))
    model.train()
    torch.manual_seed(0)
    noisy = model(input_ids=ids).logits
    assert not torch.equal(noisy, before)  # dropout is active while training


def test_attention_runs_sdpas_arithmetic_with_the_masks_while_training(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from finetune_core.model.dropout_masks import ATTENTION

    directory = build_tiny_bert(tmp_path / "tiny", ["a small corpus of words", "for a tiny model"])
    model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=2).eval()
    assert model.config._attn_implementation == "sdpa"
    ids = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 3, 0, 0, 0]])  # the second row padded: a real mask
    mask = (ids != 0).long()
    reference = model(input_ids=ids, attention_mask=mask).logits

    use_numpy_masks(model)
    assert model.config._attn_implementation == ATTENTION
    set_dropout(model, 1e-9)  # the training path with nothing dropped: SDPA's result
    model.train()
    assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, reference, atol=1e-5)

    set_dropout(model, 0.0)
    for layer in model.bert.encoder.layer:  # attention-probability dropout alone
        layer.attention.self.dropout.p = 0.5
    states = lambda: model.bert(input_ids=ids, attention_mask=mask).last_hidden_state  # noqa: E731
    model.eval()
    plain = states()
    model.train()
    torch.manual_seed(3)
    first = states()
    torch.manual_seed(3)
    assert torch.equal(states(), first)
    assert not torch.allclose(first, plain, atol=1e-2)  # attention probabilities were dropped

    model.save_pretrained(tmp_path / "saved")  # a plain checkpoint: the attention choice is not saved
    assert ATTENTION not in (tmp_path / "saved" / "config.json").read_text()
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").config._attn_implementation == "sdpa"
