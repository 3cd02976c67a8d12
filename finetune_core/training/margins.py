"""Each train row's margin in its stage-2 training batch, epoch by epoch: the given class's logit
less the largest other's. A flipped label is learnt late, if at all, so its margin stays low while
a hard clean row's rises; averaged over the epochs it is the area under the margin (Pleiss et al.,
2020), the label review's second reading (finetune_core.evaluation.label_review.review_margins;
docs/concepts/label-review.md). Single-label classification (pairs too) only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from finetune_core.durable import write_atomic

MARGINS_FILE = "training_margins.npz"


@dataclass
class MarginRecorder:
    """``margins[epoch, row]`` (NaN: not trained on that epoch, e.g. cut by a time budget) and
    ``rival[epoch, row]``, the class with the largest other logit (-1 where not seen)."""

    path: Path
    targets: torch.Tensor
    margins: np.ndarray
    rival: np.ndarray

    @classmethod
    def start(cls, path: Path, epochs: int, targets: torch.Tensor, resume: bool) -> MarginRecorder:
        """Empty, or on a resume the epochs an earlier attempt recorded."""
        margins = np.full((epochs, len(targets)), np.nan, dtype=np.float32)
        rival = np.full((epochs, len(targets)), -1, dtype=np.int64)
        if resume and path.is_file():
            with np.load(path) as saved:
                done = min(epochs, len(saved["margins"]))
                if saved["margins"].shape[1] == len(targets):
                    margins[:done], rival[:done] = saved["margins"][:done], saved["rival"][:done]
        return cls(Path(path), targets.detach().cpu().long(), margins, rival)

    def hearing(self, epoch: int):
        """``(rows, outputs) -> None`` for ``network_epoch``: records that epoch's batches."""

        def record(rows: np.ndarray, outputs: torch.Tensor) -> None:
            logits = outputs.detach().float().cpu()
            given = self.targets[rows]
            mine = logits.gather(1, given[:, None]).squeeze(1)
            others = logits.scatter(1, given[:, None], -torch.inf)
            best_other, rival = others.max(dim=1)
            self.margins[epoch, rows] = (mine - best_other).numpy()
            self.rival[epoch, rows] = rival.numpy()

        return record

    def end_epoch(self, epoch: int, ddp=None) -> None:
        """Each rank heard its share of the rows: rank 0 gathers the epoch and keeps the file."""
        if ddp is not None:
            self.margins[epoch], self.rival[epoch] = _gathered(ddp, self.margins[epoch], self.rival[epoch])
            if not ddp.is_main:
                return
        buffer = io.BytesIO()
        np.savez(buffer, margins=self.margins, rival=self.rival, targets=self.targets.numpy())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, buffer.getvalue())


def _gathered(ddp, margins: np.ndarray, rival: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's rows of one epoch (each row trained on one rank): sums of the values heard."""
    heard = ~np.isnan(margins)
    totals = ddp.sum_arrays(np.where(heard, margins, 0.0), heard, np.where(heard, rival, 0))
    values, count, rivals = totals
    merged = np.where(count > 0, values / np.maximum(count, 1), np.nan).astype(np.float32)
    return merged, np.where(count > 0, np.rint(rivals / np.maximum(count, 1)), -1).astype(np.int64)


def read_margins(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(margins, rival, targets) as the stage kept them; None where it kept none."""
    if not Path(path).is_file():
        return None
    with np.load(path) as saved:
        return saved["margins"], saved["rival"], saved["targets"]
