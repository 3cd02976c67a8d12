"""A few-shot run on the defaults, killed and resumed through the installed command at torch's own
thread count (a user's setting, not the tests' OMP_NUM_THREADS=1): `strategy: auto` on 8 rows per
class picks the contrastive stage with torch's dropout masks; SIGKILLed right after its first epoch
is committed, the same command continues it and ends with the weights and metrics of an
uninterrupted run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import torch
from safetensors.torch import load_file

from finetune_core.config.loading import validate_config
from finetune_core.model.dropout_masks import STAGE_MASKS
from tests.conftest import tiny_config
from tests.datasets import easy_sentiment
from tests.flows.processes import run_config


def _default_fewshot(backbone: Path, tmp_path: Path, out: Path) -> dict:
    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    easy_sentiment(16, 0).to_csv(files["train"], index=False)  # 8 per class
    easy_sentiment(40, 1).to_csv(files["test"], index=False)
    raw = tiny_config(backbone, files, f"sqlite:///{out / 'mlflow.db'}", out)
    del raw["training"]["strategy"]  # the default, as users get it
    raw["training"]["contrastive"] = {"epochs": 2}  # the default is 1: a second epoch to resume into
    return raw


def test_a_default_fewshot_run_killed_mid_contrastive_resumes_to_the_same_model(
    prefect_server, tiny_backbone, tmp_path
):
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    for out in (straight_dir, killed_dir):
        out.mkdir()
    raw = _default_fewshot(tiny_backbone, tmp_path, straight_dir)
    config = validate_config(raw)
    assert config.training.strategy == "auto" and STAGE_MASKS["contrastive"] == "torch"
    done, summary = run_config(prefect_server, straight_dir, raw, user_threads=True)
    assert done.returncode in (0, 3), done.stderr[-3000:]
    straight = json.loads(summary.read_text())
    assert list(straight["stages"]) == ["contrastive", "frozen", "unfrozen"]  # auto chose contrastive

    raw = _default_fewshot(tiny_backbone, tmp_path, killed_dir)
    killed, _ = run_config(prefect_server, killed_dir, raw, kill_at="epoch:contrastive:1", user_threads=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    done, summary = run_config(prefect_server, killed_dir, raw, user_threads=True)
    assert done.returncode == straight_result_code(straight), done.stderr[-3000:]
    resumed = json.loads(summary.read_text())

    assert resumed["stages"]["contrastive"]["resumed_after_epoch"] == 1
    assert resumed["stages"]["contrastive"]["epochs_run"] == straight["stages"]["contrastive"]["epochs_run"] == 2
    assert resumed["metrics"] == straight["metrics"]
    ours = load_file(Path(resumed["run_dir"]) / "model" / "model.safetensors")
    theirs = load_file(Path(straight["run_dir"]) / "model" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def straight_result_code(summary: dict) -> int:
    return 0 if summary["gate_passed"] else 3
