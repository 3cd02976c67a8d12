"""Per-epoch training state for resuming a killed run exactly where it stopped.

``<run_dir>/checkpoints/<stage>/`` holds the model, optimizer, scheduler and RNG state after
the last finished epoch, the best model so far, and ``progress.json``. Files are written to
a temporary name and renamed, so a kill mid-write leaves the previous epoch intact.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class Progress:
    stage: str
    epoch: int = 0  # last finished epoch
    step: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    done: bool = False


def _atomic_save(obj, path: Path) -> None:
    scratch = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, scratch)
    scratch.replace(path)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class Checkpointer:
    def __init__(self, directory: Path | None):
        self.directory = Path(directory) if directory else None

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def save_epoch(self, progress: Progress, model, optimizer, scheduler) -> None:
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict() if optimizer else None,
                "scheduler": scheduler.state_dict() if scheduler else None,
                "rng": rng_state(),
            },
            self.directory / "state.pt",
        )
        self.save_progress(progress)

    def save_progress(self, progress: Progress) -> None:
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        scratch = self.directory / "progress.json.tmp"
        scratch.write_text(json.dumps(asdict(progress), indent=2))
        scratch.replace(self.directory / "progress.json")

    def save_best(self, model) -> None:
        if self.enabled:
            self.directory.mkdir(parents=True, exist_ok=True)
            _atomic_save(model.state_dict(), self.directory / "best.pt")

    def load_progress(self) -> Progress | None:
        if not self.enabled or not (self.directory / "progress.json").is_file():
            return None
        return Progress(**json.loads((self.directory / "progress.json").read_text()))

    def restore(self, model, optimizer, scheduler) -> None:
        state = torch.load(self.directory / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        if optimizer is not None and state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])

    def best_state(self) -> dict | None:
        path = self.directory / "best.pt" if self.enabled else None
        return torch.load(path, weights_only=True) if path and path.is_file() else None
