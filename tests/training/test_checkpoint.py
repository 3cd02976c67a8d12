"""Checkpoint atomicity: a kill at any point of an epoch's checkpoint writes leaves either the
previous epoch or this one, and resume never applies an epoch on top of its own result.

The model is one counter that each epoch adds 1 to, so an epoch repeated on top of its own
result shows as a count past the number of epochs. A kill is simulated by raising at each
point of each durable write (before it, after the temporary file is written but before the
rename, after the rename); nothing in the checkpointer catches it, so the files on disk are
those a SIGKILL at that point leaves.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from finetune_core.training import checkpoint
from finetune_core.training.checkpoint import Checkpointer
from finetune_core.training.loop import EpochLoop

REAL_WRITE = checkpoint._write_durably
EPOCHS = 4
SCORES = [0.5, 0.7, 0.6, 0.8]  # epoch 3 is not an improvement: best weights from epochs 2 and 4


class Killed(BaseException):
    pass


class Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.value = torch.nn.Parameter(torch.zeros(1))


def _run(directory, resume: bool) -> tuple[Counter, object]:
    model = Counter()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_epoch(epoch):
        with torch.no_grad():
            model.value.add_(1.0)
        return float(epoch)

    def validate():
        return {"accuracy": SCORES[int(model.value.item()) - 1]}

    loop = EpochLoop(
        "unfrozen", EPOCHS, 10, "val_accuracy", True, keep_best=False, checkpointer=Checkpointer(directory)
    )
    return model, loop.run(model, train_epoch, validate, optimizer, resume=resume)


def _killing_writes(monkeypatch, kill_at: int, phase: str):
    real = checkpoint._write_durably
    calls = itertools.count()

    def write(write_to, path):
        index = next(calls)
        if index == kill_at and phase == "before":
            raise Killed
        if index == kill_at and phase == "temporary":  # the temporary file is written, not renamed
            scratch = path.with_name(f".{path.name}.killed.tmp")
            with open(scratch, "wb") as handle:
                write_to(handle)
            raise Killed
        real(write_to, path)
        if index == kill_at and phase == "after":
            raise Killed

    monkeypatch.setattr(checkpoint, "_write_durably", write)


def _writes_in_a_run(tmp_path, monkeypatch) -> int:
    calls = []
    real = checkpoint._write_durably
    monkeypatch.setattr(checkpoint, "_write_durably", lambda w, p: (calls.append(p.name), real(w, p)))
    _run(tmp_path / "count", resume=False)
    monkeypatch.setattr(checkpoint, "_write_durably", real)
    return len(calls)


def test_a_kill_at_any_point_of_any_checkpoint_write_resumes_to_the_same_result(tmp_path, monkeypatch):
    writes = _writes_in_a_run(tmp_path, monkeypatch)
    assert writes >= 3 * EPOCHS  # best weights (on improvement), state, readable progress per epoch
    straight_model, straight = _run(tmp_path / "straight", resume=False)
    for kill_at, phase in itertools.product(range(writes), ("before", "temporary", "after")):
        directory = tmp_path / f"kill-{kill_at}-{phase}"
        _killing_writes(monkeypatch, kill_at, phase)
        with pytest.raises(Killed):
            _run(directory, resume=False)
        monkeypatch.setattr(checkpoint, "_write_durably", REAL_WRITE)
        model, result = _run(directory, resume=True)
        where = f"killed at write {kill_at} ({phase})"
        assert model.value.item() == EPOCHS, where  # no epoch applied twice, none skipped
        assert result.history == straight.history, where
        assert result.best_epoch == straight.best_epoch, where
        leftovers = {p.name for p in directory.iterdir()} - {"state.pt", "progress.json"}
        assert len(leftovers) == 1 and next(iter(leftovers)).startswith("best-"), (where, leftovers)


def test_best_weights_belong_to_the_committed_epoch(tmp_path, monkeypatch):
    """Killed after epoch 3's state is committed: the best weights are still epoch 2's."""
    _killing_writes(monkeypatch, kill_at=_index_of_third_epoch_mirror(tmp_path, monkeypatch), phase="before")
    with pytest.raises(Killed):
        _run(tmp_path / "run", resume=False)
    saved = Checkpointer(tmp_path / "run")
    assert saved.load_progress().epoch == 3 and saved.load_progress().best_epoch == 2
    assert saved.best_state()["value"].item() == 2.0


def _index_of_third_epoch_mirror(tmp_path, monkeypatch) -> int:
    names = []
    monkeypatch.setattr(checkpoint, "_write_durably", lambda w, p: (names.append(p.name), REAL_WRITE(w, p)))
    _run(tmp_path / "names", resume=False)
    monkeypatch.setattr(checkpoint, "_write_durably", REAL_WRITE)
    mirrors = [i for i, name in enumerate(names) if name == "progress.json"]
    return mirrors[2]
