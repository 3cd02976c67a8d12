"""The installed `finetune` command in its own process, as a user runs it, for the kill tests: told
to SIGKILL itself at a phase (finetune_core/faults.py), or run at torch's own thread count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from finetune_core.faults import VARIABLE


def finetune(prefect_server: str, cwd: Path, *args: str, kill_at: str | None = None, user_threads: bool = False):
    """The installed `finetune` in its own process (as tests/conftest.py's ``finetune_cli``), told to
    SIGKILL itself at ``kill_at``; ``user_threads``: torch's own thread count, not the tests' one."""
    script = Path(sys.executable).with_name("finetune")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    env = {k: v for k, v in os.environ.items() if not (k == VARIABLE or (user_threads and k == "OMP_NUM_THREADS"))}
    env.update({"PREFECT_API_URL": prefect_server, **({VARIABLE: kill_at} if kill_at else {})})
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def committed_epoch(runs: Path) -> int:
    """The last unfrozen epoch a run under ``runs`` has committed (0: none yet)."""
    import torch

    state = next(runs.glob("*/checkpoints/unfrozen/state.pt"), None)
    try:
        return torch.load(state, weights_only=False)["progress"]["epoch"] if state else 0
    except Exception:  # being replaced right now
        return 0


def run_config(prefect_server: str, out: Path, raw: dict, **options) -> tuple[subprocess.CompletedProcess, Path]:
    """`finetune run CONFIG --summary-json SUMMARY` in ``out``."""
    config, summary = out / "config.yaml", out / "summary.json"
    config.write_text(yaml.safe_dump(raw))
    summary.unlink(missing_ok=True)
    return finetune(prefect_server, out, "run", str(config), "--summary-json", str(summary), **options), summary
