"""Per-epoch training state for resuming a killed run exactly where it stopped.

``<run_dir>/checkpoints/<stage>/state.pt`` is the one commit point of an epoch: model,
optimizer, scheduler and RNG state after the last finished epoch, the epoch's ``Progress``,
and the name of the best weights' file. It is written to a temporary file, flushed to disk
and renamed into place, so after a kill at any point resume sees either the previous epoch
or this one, never a state from one epoch with the progress of another. The best weights
are written first under a new name (``best-<id>.pt``) that only the committed state refers
to; files no committed state names are leftovers of a killed write and are removed.
``progress.json`` is a readable copy of the committed progress, never read back.
"""

from __future__ import annotations

import json
import pickle
import random
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from finetune_core.durable import read_json_or_none, writing

STATE, MIRROR, REPORTED = "state.pt", "progress.json", "reported.json"


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
    train_rows: int | None = None  # rows trained so far; None in checkpoints written before it was kept
    done: bool = False  # no epoch is left: all run, stopped early, or out of time


def _write_durably(write, path: Path) -> None:
    """``write(file)`` to a temporary name, fsync, rename over ``path``, fsync the directory."""
    with writing(path) as handle:
        write(handle)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class Checkpointer:
    def __init__(self, directory: Path | None):
        self.directory = Path(directory) if directory else None
        self._best_file: str | None = None  # the best weights the next commit will name
        self._loaded: dict | None = None  # the committed state, read once on resume

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def save_best(self, model) -> None:
        """Write the best weights so far; they count once the epoch's state is committed."""
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"best-{uuid.uuid4().hex[:12]}.pt"
        _write_durably(lambda handle: torch.save(model.state_dict(), handle), self.directory / name)
        self._best_file = name

    def save_epoch(self, progress: Progress, model, optimizer, scheduler) -> None:
        """Commit the epoch: state and progress in one atomic write."""
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer else None,
            "scheduler": scheduler.state_dict() if scheduler else None,
            "rng": rng_state(),
            "progress": asdict(progress),
            "best_file": self._best_file,
        }
        _write_durably(lambda handle: torch.save(state, handle), self.directory / STATE)
        self._remove_unreferenced()
        self.save_progress(progress)

    def save_progress(self, progress: Progress) -> None:
        """The readable copy of the progress (resume reads the committed state instead)."""
        if self.enabled:
            self.directory.mkdir(parents=True, exist_ok=True)
            text = json.dumps(asdict(progress), indent=2).encode()
            _write_durably(lambda handle: handle.write(text), self.directory / MIRROR)

    def save_reported(self, epoch: int) -> None:
        """The last epoch the epoch callback (tracking) received. Kept apart from the committed
        state: at worst a kill between the two reports an epoch twice, never not at all."""
        if self.enabled:
            text = json.dumps({"epoch": epoch}).encode()
            _write_durably(lambda handle: handle.write(text), self.directory / REPORTED)

    def reported_epoch(self) -> int:
        path = self.directory / REPORTED if self.enabled else None
        saved = read_json_or_none(path) if path is not None else None
        return int(saved["epoch"]) if isinstance(saved, dict) and "epoch" in saved else 0

    def _remove_unreferenced(self) -> None:
        for path in self.directory.glob("best-*.pt"):
            if path.name != self._best_file:
                path.unlink(missing_ok=True)
        for path in self.directory.glob(".*.tmp"):
            path.unlink(missing_ok=True)

    def _committed(self) -> dict | None:
        if self._loaded is None and self.enabled and (self.directory / STATE).is_file():
            try:
                self._loaded = torch.load(self.directory / STATE, weights_only=False)
            except (EOFError, RuntimeError, pickle.UnpicklingError):  # not a whole commit: no epoch is done
                return None
            self._best_file = self._loaded.get("best_file")
            self._remove_unreferenced()  # what a kill after the commit left before cleaning up
        return self._loaded

    def load_progress(self) -> Progress | None:
        state = self._committed()
        return Progress(**state["progress"]) if state is not None else None

    def restore(self, model, optimizer, scheduler) -> None:
        state = self._committed()
        model.load_state_dict(state["model"])
        if optimizer is not None and state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])

    def best_state(self) -> dict | None:
        state = self._committed()
        name = state.get("best_file") if state else None
        return torch.load(self.directory / name, weights_only=True) if name else None
