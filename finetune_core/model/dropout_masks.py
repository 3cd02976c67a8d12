"""Dropout masks from NumPy's PCG64 raw bits on CPUs, where torch's Bernoulli kernel is slow.

On this project's 2-core Xeon (fp32), one BERT hidden-state dropout on a stage-2 batch ([32, 14,
384]) costs 2.2 ms forward and backward with ``F.dropout`` (``bernoulli_`` draws its mask one
element at a time, and its backward is another pass) against 0.4 ms with a mask cut from PCG64's
raw 64-bit output, four 16-bit draws a word, compared with a threshold (``bench/dropout_masks.py``).
A step has 13 of them (embeddings, then attention output and feed-forward output in each of 6
blocks), about a tenth of the step. The mask is the same Bernoulli draw in distribution: an
element is dropped when its 16-bit draw is below ``round(p × 65536)``, so the rate is p to within
1/131072, and kept values are scaled by the exact inverse of the keep rate, so the expectation is
unchanged. Each call seeds PCG64 from one draw of torch's generator: runs stay reproducible from
``training.seed``, and a resumed run (its checkpoint restores torch's RNG state) draws the same masks.

Only modules called as ``nn.Dropout`` change. Attention-probability dropout is not a call: the
attention reads its module's ``p`` and hands it to ``scaled_dot_product_attention``, which stays
torch's. GPU tensors, eval mode and rates of 0 take ``nn.Dropout``'s own path.
"""

from __future__ import annotations

import numpy as np
import torch

_DRAWS = 65536  # a 16-bit draw per element


class NumpyMaskDropout(torch.nn.Dropout):
    """``nn.Dropout`` whose mask, on CPU tensors while training, comes from NumPy's PCG64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p >= 1:
            return x * 0
        dropped_below = round(self.p * _DRAWS)
        seed = int(torch.randint(0, 2**62, (1,)))  # torch's generator: seeded and checkpointed
        words = np.random.PCG64(seed).random_raw(-(-x.numel() // 4))
        draws = words.view(np.uint16)[: x.numel()]
        keep = torch.from_numpy(draws >= np.uint16(dropped_below)).view(x.shape)
        # the scaled mask as x's dtype: autograd keeps it for the backward, one multiply each way
        return x * keep.to(x.dtype).mul_(_DRAWS / (_DRAWS - dropped_below))


def use_numpy_masks(model: torch.nn.Module) -> int:
    """Every plain ``nn.Dropout`` of ``model`` becomes a ``NumpyMaskDropout`` of the same rate (no
    parameters, so the saved weights are unchanged); returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                replacement = NumpyMaskDropout(child.p, child.inplace)
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped += 1
    return swapped
