"""The frozen stage's L-BFGS head: the optimum scikit-learn's LogisticRegression finds on
unit-length features, chosen by `auto` when AdamW would take few steps, and resumable per epoch."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from finetune_core.data.prepare import prepare_splits
from finetune_core.training import frozen_stage
from finetune_core.training.head_solver import (
    LBFGS_BELOW_STEPS,
    choose_solver,
    lbfgs_head_epoch,
    lbfgs_optimizer,
    penalty_scale,
)
from finetune_core.training.stage_setup import StageInputs
from tests.training.stage_helpers import Killed, easy_task_config, kill_after, weights, write_easy_task


class LinearHead(torch.nn.Module):
    def __init__(self, features: int, outputs: int):
        super().__init__()
        self.classifier = torch.nn.Linear(features, outputs)


@pytest.mark.parametrize("classes", [2, 3])
def test_lbfgs_head_matches_scikit_learn_logistic_regression(classes):
    rng = np.random.default_rng(0)
    length = 7.0  # features at their own length; scikit-learn fits the unit-length ones
    centres = rng.normal(size=(classes, 12))
    y = rng.integers(0, classes, size=60)
    raw = centres[y] + rng.normal(scale=1.5, size=(60, 12))
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    features = torch.tensor(unit * length, dtype=torch.float32)
    model = LinearHead(12, classes)
    optimizer = lbfgs_optimizer(list(model.parameters()), 500)
    scale = penalty_scale(features, 1.0, "classification", classes)
    targets = torch.tensor(y)
    lbfgs_head_epoch(
        model,
        lambda m, x: m.classifier(x),
        features,
        targets,
        "classification",
        optimizer,
        {"classifier.weight"},
        scale,
    )
    ours = torch.softmax(model.classifier(features), dim=1).detach().numpy()
    theirs = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(unit, y).predict_proba(unit)
    assert np.abs(ours - theirs).max() < 2e-3
    assert np.abs(ours - theirs).max() < np.abs(theirs - 1 / classes).max() / 20  # not both near uniform


def test_auto_takes_lbfgs_only_while_adamw_would_take_few_steps():
    assert choose_solver("auto", 20, 1) == "lbfgs"  # 16 rows, batch 32: 20 AdamW steps in all
    assert choose_solver("auto", 20, LBFGS_BELOW_STEPS // 20) == "adamw"
    assert choose_solver("adamw", 20, 1) == "adamw" and choose_solver("lbfgs", 20, 1000) == "lbfgs"


def test_few_rows_fit_the_head_with_lbfgs_by_default_and_resume_to_the_same_head(tmp_path, tiny_backbone):
    files = write_easy_task(tmp_path, 40, 40)
    training = {"frozen": {"epochs": 3}, "max_length": 16, "cache_dir": str(tmp_path / "cache")}
    config = easy_task_config(files, tiny_backbone, training)
    assert config.training.frozen.solver == "auto"
    prepared = prepare_splits(config, tmp_path / "data")
    straight = frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), tmp_path / "straight"))
    assert straight.extra["head_solver"] == "lbfgs" and straight.epochs_run == 3
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        frozen_stage.train_frozen(
            StageInputs(config, prepared, str(tiny_backbone), tmp_path / "killed", kill_after("frozen", 1), checkpoints)
        )
    resumed = frozen_stage.train_frozen(
        StageInputs(config, prepared, str(tiny_backbone), tmp_path / "killed", checkpoints=checkpoints, resume=True)
    )
    assert resumed.resumed_after_epoch == 1
    ours, theirs = weights(tmp_path / "killed"), weights(tmp_path / "straight")
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in theirs)
