"""Train only the token-embedding rows the training split uses, with the result of training all.

Training the whole token matrix (as HF Trainer does) costs, every step, a dense gradient over the
vocabulary (30,522 x 384 for BERT: 11.7 M of all-MiniLM-L6-v2's 22.7 M parameters), its zeroing,
its share of the clipping norm and an AdamW update of every row, though a batch touches a few
hundred rows and a training split a few thousand. A row no training text contains never gets a
gradient, so AdamW's moments for it stay zero and its update is decoupled weight decay alone:
``w <- w * (1 - lr * weight_decay)`` at each step the matrix steps. So the optimizer holds the
seen rows as a small parameter, and the unseen ones are the frozen pretrained rows times the
product of those decay factors, kept as one number (in the state dict, so best-epoch restore and
resume carry it). ``fold_back`` writes both into the model's own embedding before it is saved: the
weights match training the full matrix up to float rounding (tested), at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from finetune_core.model.batching import ArrowTokens

# The encoder stages train only the seen rows, fixed behaviour (docs/decisions/seen-token-rows.md; the
# retired key training.token_rows): benchmarks and tests set False to train the whole matrix instead.
SEEN_ROWS_ONLY = True


class SeenRowsEmbedding(torch.nn.Module):
    """Stands in for ``original`` (an ``nn.Embedding``) while a stage trains."""

    def __init__(self, original: torch.nn.Embedding, seen: np.ndarray):
        super().__init__()
        self.original = [original]  # a list: not a submodule, so its weight is in no group or state dict
        weight = original.weight.detach()
        seen = torch.as_tensor(seen, dtype=torch.long, device=weight.device)
        index = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
        index[seen] = torch.arange(len(seen), device=weight.device)
        # buffers, not parameters: no optimizer group, no gradient, not broadcast by DDP each step;
        # not persistent: constant for the stage, so checkpoints and best-epoch copies skip 47 MB
        self.register_buffer("pretrained", weight, persistent=False)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("seen", seen)  # persistent: a checkpoint from other rows will not load
        self.rows = torch.nn.Parameter(weight[seen].clone())
        self.unseen_scale = 1.0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        unseen = F.embedding(input_ids, self.pretrained)
        if self.unseen_scale != 1.0:
            unseen = unseen * self.unseen_scale
        position = self.index[input_ids]
        seen = F.embedding(position.clamp(min=0), self.rows)
        return torch.where((position >= 0).unsqueeze(-1), seen, unseen)

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(self.unseen_scale, dtype=torch.float64)

    def set_extra_state(self, state) -> None:
        self.unseen_scale = float(state)

    def decay_unseen(self, optimizer: torch.optim.Optimizer) -> None:
        """Called before each optimizer step: the unseen rows take the step's decoupled decay,
        exactly when the full matrix would (it steps only when it has a gradient)."""
        if self.rows.grad is None:
            return
        for group in optimizer.param_groups:
            if any(parameter is self.rows for parameter in group["params"]):
                self.unseen_scale *= 1.0 - group["lr"] * group["weight_decay"]
                return

    def folded_weight(self) -> torch.Tensor:
        weight = self.pretrained * self.unseen_scale
        weight[self.seen] = self.rows.detach().to(weight.dtype)
        return weight


def seen_token_ids(rows: Iterable, padding_idx: int | None) -> np.ndarray:
    """Sorted distinct ids of ``rows`` (a list of id lists, or ``ArrowTokens``, read a values
    buffer at a time), less the padding row, which the full matrix never trains either
    (``nn.Embedding(padding_idx=...)`` gives it no gradient)."""
    if isinstance(rows, ArrowTokens):
        chunks = rows.id_buffers()
    else:
        chunks = (np.asarray(row, dtype=np.int64) for row in rows)
    seen: set[int] = set()
    for chunk in chunks:
        seen.update(np.unique(chunk).tolist())
    seen.discard(padding_idx)
    return np.array(sorted(seen), dtype=np.int64)


def use_seen_rows(model, rows: Iterable) -> SeenRowsEmbedding | None:
    """Swap ``model``'s token embedding for a ``SeenRowsEmbedding`` over the ids in ``rows``;
    None (nothing changed) when the matrix is frozen, shared with an output layer, or not an
    ``nn.Embedding``."""
    try:
        original = model.get_input_embeddings()
    except NotImplementedError:  # custom modelling code without the accessor: train the matrix as it is
        return None
    if not isinstance(original, torch.nn.Embedding) or not original.weight.requires_grad:
        return None
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and getattr(output, "weight", None) is original.weight:
        return None
    replacement = SeenRowsEmbedding(original, seen_token_ids(rows, original.padding_idx))
    model.set_input_embeddings(replacement)
    return replacement


def attach(replacement: SeenRowsEmbedding | None, optimizer: torch.optim.Optimizer) -> None:
    if replacement is not None:
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: replacement.decay_unseen(opt))


def fold_back(model, replacement: SeenRowsEmbedding | None) -> dict:
    """Put the model's own embedding back, holding what training gave every row; returns the
    stage's extra metric (how many rows trained), empty when the whole matrix was used."""
    if replacement is None:
        return {}
    original = replacement.original[0].to(replacement.rows.device)
    with torch.no_grad():
        original.weight.copy_(replacement.folded_weight())
    model.set_input_embeddings(original)
    return {"trained_token_rows": len(replacement.seen)}
