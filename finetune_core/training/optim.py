"""Optimisation for the unfrozen stage: layer-wise learning rates, schedules, gradual unfreezing.

The optimizer holds every layer's parameter group from the start; a layer that is still
frozen has no gradient and AdamW skips it, so unfreezing never needs a rebuilt optimizer
(fastai's known pitfall) and each layer's Adam state starts when it starts learning.
"""

from __future__ import annotations

import math
import time

import torch
from torch.optim.lr_scheduler import LRScheduler

from finetune_core.model.heads import HeadSpec, layer_depth, num_layers

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight")


def depth_of_parameters(model, spec: HeadSpec | None) -> dict[str, int]:
    return {name: layer_depth(name, model, spec) for name, _ in model.named_parameters()}


def layerwise_groups(model, spec, learning_rate: float, decay: float, weight_decay: float) -> list[dict]:
    """One group per (depth, decay/no-decay): depth d gets lr * decay ** (top - d)."""
    top = num_layers(model) + 1
    depths = depth_of_parameters(model, spec)
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        depth, no_decay = depths[name], name.endswith(NO_DECAY)
        group = groups.setdefault(
            (depth, no_decay),
            {
                "params": [],
                "names": [],
                "depth": depth,
                "lr": learning_rate * decay ** (top - depth),
                "weight_decay": 0.0 if no_decay else weight_decay,
            },
        )
        group["params"].append(parameter)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def make_optimizer(groups: list[dict], learning_rate: float) -> torch.optim.Optimizer:
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    # The fused AdamW kernel (CPU and CUDA) is faster per step than foreach
    # (docs/benchmarks/engine-first-targets.md); fall back where absent.
    try:
        return torch.optim.AdamW(clean, lr=learning_rate, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(clean, lr=learning_rate, foreach=True)


def make_scheduler(optimizer, kind: str, warmup_steps: int, total_steps: int):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)


def decay_factor(kind: str, done: float) -> float:
    """The factor of the peak learning rate once ``done`` (0..1) of the steps after warmup have run."""
    if kind == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * done)) if kind == "cosine" else 1.0 - done


def schedule_shape(kind: str, warmup_steps: int, total_steps: int):
    """The factor of the peak learning rate at each step, as ``make_scheduler``'s (transformers')."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, decay_factor(kind, (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return factor


def landing_scheduler(optimizer, kind: str, warmup_steps: int, total_steps: int, land_steps: int, landing):
    """``make_scheduler``'s schedule, except for the groups flagged in ``landing`` (one flag per
    optimizer group): those freeze after ``land_steps`` (``freeze_after_epochs``), so they run the
    same shape compressed into those steps, reaching zero there, scaled so that the sum of their
    learning rate over the stage (what they learn in all) is what the full schedule gives them.
    Frozen at full speed mid-schedule they cost accuracy (docs/benchmarks/freeze-later.md)."""
    full = schedule_shape(kind, warmup_steps, total_steps)
    short = schedule_shape(kind, min(warmup_steps, land_steps // 2), land_steps)
    scale = sum(map(full, range(total_steps))) / max(sum(map(short, range(land_steps))), 1e-12)

    def landed(step: int) -> float:
        return scale * short(step) if step < land_steps else 0.0

    lambdas = [landed if flag else full for flag in landing]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


class BudgetSchedule(LRScheduler):
    """Warmup then decay over a wall-clock budget (Li et al. 2020, "Budgeted training"): progress
    is the larger of the step fraction and the time fraction, so the learning rate reaches zero
    when the budget ends, not at a step count the budget would cut short. Time-dependent by nature:
    a budgeted run is not bit-reproducible. The clock is not part of the state: a resumed run
    starts a fresh budget, as the stage's deadline does."""

    def __init__(self, optimizer, kind: str, warmup_ratio: float, total_steps: int, budget_seconds: float):
        self.kind, self.warmup_ratio = kind, warmup_ratio
        self.total_steps, self.budget_seconds = max(total_steps, 1), budget_seconds
        self.started = time.perf_counter()
        super().__init__(optimizer)

    def progress(self) -> float:
        by_time = (time.perf_counter() - self.started) / self.budget_seconds
        return min(1.0, max(self.last_epoch / self.total_steps, by_time))

    def factor(self, progress: float) -> float:
        warmup = self.warmup_ratio
        if progress < warmup:
            return progress / warmup
        return decay_factor(self.kind, (progress - warmup) / (1 - warmup))

    def get_lr(self) -> list[float]:
        factor = self.factor(self.progress())
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict:
        return {k: v for k, v in super().state_dict().items() if k != "started"}


def unfrozen_depths(epoch: int, epochs: int, top: int) -> set[int]:
    """Depths trainable in ``epoch`` (1-based) of gradual unfreezing: the top slice first,
    one more slice each epoch, everything by the last epoch."""
    count = math.ceil((top + 1) * epoch / epochs)
    return set(range(top + 1 - count, top + 1))


def apply_trainable_depths(
    model, depths_by_name: dict[str, int], trainable: set[int], kept_frozen: set[str] = frozenset()
) -> None:
    """requires_grad on for the parameters at ``trainable`` depths, except ``kept_frozen`` ones."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(depths_by_name[name] in trainable and name not in kept_frozen)
