"""Dropout masks from NumPy (finetune_core.model.dropout): the same Bernoulli dropout as torch's
(rate, scale, gradient), reproducible from torch's seed, swapped in and out of a model."""

import torch

from finetune_core.model.dropout import NumpyMaskDropout, restore, use_numpy_masks


def test_masks_drop_at_the_rate_scale_the_rest_and_carry_the_gradient():
    torch.manual_seed(0)
    x = torch.randn(64, 20, 96, requires_grad=True)
    y = NumpyMaskDropout(0.25).train()(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    torch.testing.assert_close(y[kept], (x / 0.75)[kept])
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    assert torch.equal(NumpyMaskDropout(0.25).eval()(x), x)


def test_masks_follow_torchs_seed_and_differ_between_calls():
    layer, x = NumpyMaskDropout(0.1).train(), torch.ones(8, 50)
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first) and not torch.equal(first, second)
    assert layer(x.bfloat16()).dtype == torch.bfloat16


def test_a_model_gets_numpy_masks_and_its_own_dropout_back(tiny_backbone):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=2)
    plain = [m for m in model.modules() if type(m) is torch.nn.Dropout]
    swapped = use_numpy_masks(model)
    assert len(swapped) == len(plain) > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    model.train()
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    torch.manual_seed(0)
    a = model(input_ids=ids).logits
    torch.manual_seed(0)
    assert torch.equal(model(input_ids=ids).logits, a)
    restore(swapped)
    assert [m for m in model.modules() if isinstance(m, torch.nn.Dropout)] == plain
