"""How the frozen stage fits its head on cached features: minibatch AdamW, or full-batch L-BFGS on
an L2-regularised loss (what scikit-learn's LogisticRegression does, and what SetFit and the LP-FT
paper fit on frozen features).

With few rows, AdamW at the head's defaults takes a handful of steps in total (8 rows per class,
batch 32, 20 epochs: 20 steps) and the head ends close to its random start; on cached features the
loss is convex for a linear head, so a full-batch second-order solver reaches its optimum in a few
dozen iterations whatever the row count. ``auto`` picks L-BFGS while the AdamW schedule would be
short, AdamW (minibatches, streaming) above.
"""

from __future__ import annotations

import torch

from finetune_core.training.losses import compute_loss

# `solver: auto` fits the head with L-BFGS while AdamW's schedule (epochs x batches) would take
# fewer steps than this: too few AdamW steps leave the head near its start (the few-shot runs,
# docs/benchmarks/fewshot-sst2.md); above it AdamW is unchanged, not measured against L-BFGS.
LBFGS_BELOW_STEPS = 500
# L-BFGS iterations over the whole stage, shared out over its epochs (each epoch continues the
# previous one's optimiser state, so per-epoch validation, best-epoch restore and resume behave as
# with AdamW); scikit-learn's default is 100, the tolerance usually stops it sooner.
LBFGS_MAX_ITERATIONS = 200


def choose_solver(setting: str, epochs: int, batches_per_epoch: int) -> str:
    """``adamw`` or ``lbfgs`` for ``training.frozen.solver`` (``auto`` resolved)."""
    if setting != "auto":
        return setting
    return "lbfgs" if epochs * batches_per_epoch < LBFGS_BELOW_STEPS else "adamw"


def penalty_scale(features: torch.Tensor, regularization: float, task: str, outputs: int) -> float:
    """The L2 coefficient on the head's weights that makes ``mean loss + scale * ||W||^2`` the
    scikit-learn objective ``C * sum(loss) + ||W||^2 / 2`` on unit-length features (C =
    ``regularization``). Features are used at their own length (the served model sees them
    unnormalised), so the penalty grows with their mean squared norm instead. Two classes: our
    head has two logits where scikit-learn has one (their difference), and the optimum splits it
    evenly, which halves the penalty: doubled back. Multilabel: BCE averages over the labels too,
    and each keeps its own C, as in one-vs-rest."""
    mean_square_norm = float(features.float().pow(2).sum(dim=1).mean())
    scale = mean_square_norm / (2.0 * regularization * len(features))
    if task == "classification" and outputs == 2:
        return 2.0 * scale
    return scale / outputs if task == "multilabel" else scale


def lbfgs_optimizer(parameters, iterations_per_epoch: int) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(
        parameters,
        lr=1.0,
        max_iter=iterations_per_epoch,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )


def lbfgs_head_epoch(
    model,
    head,
    features: torch.Tensor,
    targets: torch.Tensor,
    task: str,
    optimizer: torch.optim.LBFGS,
    weight_names: set[str],
    scale: float,
    class_weights: torch.Tensor | None = None,
) -> float:
    """One epoch's share of the full-batch fit; returns the data loss (no penalty) after it.
    Dropout is off: the line search needs one deterministic objective."""
    model.eval()
    features = features.float()
    penalised = [p for n, p in model.named_parameters() if n in weight_names]

    def objective():
        optimizer.zero_grad(set_to_none=True)
        loss = compute_loss(head(model, features), targets, task, class_weights)
        total = loss + scale * sum(p.pow(2).sum() for p in penalised)
        total.backward()
        return total

    optimizer.step(objective)
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        return float(compute_loss(head(model, features), targets, task, class_weights))
