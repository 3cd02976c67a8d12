"""The data-parallel stage's worker entry point under torchrun:

    torchrun --nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \
        --rdzv-id=RUN -m finetune_core.training.worker RUN_DIR/model.torchrun.pkl

The file holds the stage's arguments (``training.distributed.write_stage_file``); the launcher
``torchrun`` writes it and the exact command (``.command`` next to it) for the other nodes.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m finetune_core.training.worker STAGE_FILE")
    from finetune_core.training.distributed import run_stage_file

    run_stage_file(Path(args[0]))


if __name__ == "__main__":
    main()
