"""Dropout masks drawn with NumPy's PCG64 on CPUs, where torch's ``bernoulli_`` is slow.

Profiling a stage-2 step of all-MiniLM-L6-v2 on this project's 2-core CPU (fp32, batch 32 of
~15 tokens) put ``aten::bernoulli_`` third, after the matrix products: 12 % of the step, 20
calls, ~1.8 ms each (bench/engine_levers.py, "dropout masks"). The mask is the same Bernoulli
draw either way; NumPy's generator fills it several times faster. Each call seeds a fresh
generator from one draw of torch's global generator, so runs stay reproducible from the seed and
a resumed run (whose checkpoint restores torch's RNG state) draws the same masks. Only the
``nn.Dropout`` modules are replaced (hidden states, attention output, embeddings, classifier);
attention-probability dropout happens inside ``scaled_dot_product_attention`` and stays torch's.
"""

from __future__ import annotations

import numpy as np
import torch


class NumpyMaskDropout(torch.nn.Dropout):
    """``nn.Dropout`` with its mask from NumPy on CPU tensors; torch's kernel elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p == 1:
            return x * 0
        seed = int(torch.randint(0, 2**62, (1,)))  # torch's generator: seeded and checkpointed
        uniform = np.random.Generator(np.random.PCG64(seed)).random(x.shape, dtype=np.float32)
        mask = torch.from_numpy(uniform >= np.float32(self.p)).to(x.dtype)
        return x * mask.mul_(1.0 / (1.0 - self.p))


def use_numpy_masks(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Dropout]]:
    """Swap every plain ``nn.Dropout`` of ``model`` for a ``NumpyMaskDropout`` of the same rate;
    returns what ``restore`` needs to put them back."""
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, NumpyMaskDropout(child.p, child.inplace))
                swapped.append((parent, name, child))
    return swapped


def restore(swapped: list[tuple[torch.nn.Module, str, torch.nn.Dropout]]) -> None:
    for parent, name, original in swapped:
        original.p = getattr(parent, name).p  # a rate set while training (training.unfrozen.dropout) stays
        setattr(parent, name, original)
