"""Determinism on the default path: `precision: auto`, each run with its own feature cache (no
features shared between them): two seeded runs end with identical weights, not only metrics; at
the tests' one thread and at the thread count torch picks for a user (at least two, so parallel
reductions are exercised)."""

import os
import subprocess
import sys

import pytest
import torch

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.serving.predictor import load_model_dir
from finetune_core.training import frozen_stage, unfrozen_stage
from finetune_core.training.stage_setup import StageInputs
from tests.datasets import easy_sentiment


def _run(tmp_path, tiny_backbone, name: str) -> dict[str, torch.Tensor]:
    work = tmp_path / name
    work.mkdir()
    easy_sentiment(160, 0).to_csv(work / "train.csv", index=False)
    easy_sentiment(40, 1).to_csv(work / "test.csv", index=False)
    config = validate_config(
        {
            "data": {"train": str(work / "train.csv"), "test": str(work / "test.csv")},
            "backbone": {"candidates": [str(tiny_backbone)]},
            "training": {  # precision, device, pooling, batch order: all defaults
                "frozen": {"epochs": 2},
                "unfrozen": {"epochs": 2, "learning_rate": 2e-3},
                "max_length": 16,
                "cache_dir": str(work / "feature-cache"),
            },
        }
    )
    assert config.training.precision == "auto" and config.training.feature_cache
    prepared = prepare_splits(config, work / "data")
    frozen_stage.train_frozen(StageInputs(config, prepared, str(tiny_backbone), work / "frozen"))
    unfrozen_stage.train_unfrozen(StageInputs(config, prepared, work / "frozen", work / "model"))
    assert any((work / "feature-cache").rglob("*")), "the frozen stage extracted its own features"
    return dict(load_model_dir(work / "model")[0].state_dict())


def _users_thread_count() -> int:
    """What torch uses in a fresh process without the tests' OMP_NUM_THREADS=1."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    probe = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    return int(subprocess.run(probe, env=env, capture_output=True, text=True, check=True, timeout=120).stdout)


@pytest.fixture(params=["tests", "user"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(1 if request.param == "tests" else max(2, _users_thread_count()))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


def test_two_default_runs_end_with_identical_weights(tmp_path, tiny_backbone, threads):
    first, second = _run(tmp_path, tiny_backbone, "first"), _run(tmp_path, tiny_backbone, "second")
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert different == []
