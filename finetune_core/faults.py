"""Fault injection for the resume tests: ``FINETUNE_FAULT_KILL_AT=PHASE`` makes the process kill
itself with SIGKILL (no cleanup, no atexit, as the OOM killer or a lost node would) when it reaches
that phase. Unset, ``maybe_kill`` is one dictionary lookup. See docs/concepts/resume.md.

Phases, in the order a run reaches them:

- ``selection``: backbone selection, after the first candidate's features are saved.
- ``features``: frozen-feature extraction, after the first batch is in the temporary cache file
  (and, with ``freeze_layers``, in the layer cache's).
- ``layer-cache``: the pass filling the layer cache's missing rows, after its first batch.
- ``epoch:STAGE:N``: right after epoch N of STAGE (contrastive, frozen, unfrozen) is committed.
- ``stage-result:STAGE``: a stage's model is saved, its result (the "done" mark) not yet.
- ``logged-model``: the model is logged to MLflow, not yet registered.
- ``review-files``: the first review file is written, the others not yet.
- ``registered``: the model version exists, no alias has moved yet.
- ``trial:N:epoch:E`` (``finetune tune``): sweep trial N has reported its epoch E.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "FINETUNE_FAULT_KILL_AT"


def maybe_kill(phase: str) -> None:
    """SIGKILL this process when ``FINETUNE_FAULT_KILL_AT`` names ``phase``."""
    if os.environ.get(VARIABLE) == phase:
        os.kill(os.getpid(), signal.SIGKILL)
