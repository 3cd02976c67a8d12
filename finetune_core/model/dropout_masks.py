"""Dropout masks from NumPy's PCG64 raw bits on CPUs, where torch's Bernoulli kernel is slow.

``F.dropout``'s ``bernoulli_`` draws its mask one element at a time; a mask cut from PCG64's raw
64-bit output, four 16-bit draws a word compared with a threshold, costs a fraction of that
(docs/benchmarks/dropout-masks.md). The mask is the same Bernoulli draw in distribution: an
element is dropped when its 16-bit draw is below ``round(p × 65536)``, so the rate is p to within
1/131072, and kept values are scaled by the exact inverse of the keep rate, so the expectation is
unchanged. Each call seeds PCG64 from one draw of
torch's generator: runs stay reproducible from ``training.seed``, and a resumed run (its checkpoint
restores torch's RNG state) draws the same masks.

Two places draw masks. ``nn.Dropout`` modules (embeddings, attention output, feed-forward output,
head) are swapped for ``NumpyMaskDropout``. Attention-probability dropout is not a module call:
the attention hands its module's ``p`` to ``scaled_dot_product_attention``, whose CPU kernels
cannot drop, so torch falls back to its unfused path there anyway. ``ATTENTION``, registered with
transformers' attention interface (masks built as for SDPA), runs that same path with these masks
while training, and SDPA itself whenever nothing is dropped (evaluation, rate 0, other devices).
Neither change has parameters or reaches the saved config: the saved model is a plain one.
"""

from __future__ import annotations

import numpy as np
import torch

_DRAWS = 65536  # a 16-bit draw per element
ATTENTION = "sdpa-numpy-dropout"
# Each stage's masks on CPUs, fixed behaviour (docs/decisions/dropout-masks.md; the retired keys
# training.unfrozen/contrastive.dropout_masks): benchmarks and tests set an entry to compare the two.
STAGE_MASKS = {"unfrozen": "numpy", "contrastive": "torch"}


def drop(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` with a fraction ``p`` of its elements zeroed and the rest scaled up, mask from PCG64."""
    if p >= 1:
        return x * 0
    dropped_below = round(p * _DRAWS)
    seed = int(torch.randint(0, 2**62, (1,)))  # torch's generator: seeded and checkpointed
    words = np.random.PCG64(seed).random_raw(-(-x.numel() // 4))
    draws = words.view(np.uint16)[: x.numel()]
    keep = torch.from_numpy(draws >= np.uint16(dropped_below)).view(x.shape)
    # the scaled mask as x's dtype: autograd keeps it for the backward, one multiply each way
    return x * keep.to(x.dtype).mul_(_DRAWS / (_DRAWS - dropped_below))


class NumpyMaskDropout(torch.nn.Dropout):
    """``nn.Dropout`` whose mask, on CPU tensors while training, comes from NumPy's PCG64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        return drop(x, self.p)


def numpy_mask_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """SDPA's unfused CPU arithmetic with the attention probabilities dropped by ``drop``; SDPA
    itself when nothing is dropped. ``attention_mask``: SDPA's (boolean, True = attend, or None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0 or query.device.type != "cpu":
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probabilities = drop(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(ATTENTION, numpy_mask_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_numpy_masks(model: torch.nn.Module) -> int:
    """Every plain ``nn.Dropout`` of ``model`` becomes a ``NumpyMaskDropout`` of the same rate, and a
    model on SDPA attention that can switch runs ``ATTENTION``; returns how many modules changed."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                replacement = NumpyMaskDropout(child.p, child.inplace)
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped += 1
    config = getattr(model, "config", None)
    if getattr(model, "_supports_attention_backend", False) and getattr(config, "_attn_implementation", "") == "sdpa":
        _register_attention()
        model.set_attn_implementation(ATTENTION)
    return swapped


def choose_masks(model: torch.nn.Module, setting: str, device: torch.device) -> str:
    """A stage's masks (its ``STAGE_MASKS`` entry) applied to ``model`` on ``device``: "numpy" where they
    took (CPU, a model with dropout layers), else "torch" (GPUs always use torch's)."""
    if setting == "numpy" and device.type == "cpu" and use_numpy_masks(model):
        return "numpy"
    return "torch"
