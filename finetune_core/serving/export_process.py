"""The ONNX export of a saved model directory, run in a child process.

``torch.export`` keeps its tracing state in process-wide objects (the pre-dispatch mode stack,
``torch.compiler.is_exporting()``, ``torch.fx.traceback.current_meta``), so an export disturbs torch
work on every other thread of its process and two exports at once corrupt that state for the rest of
the process: two runs registering together in one process lost their ONNX forms, and a model loaded
on another thread during an export failed (docs/decisions/onnx-export.md, Consequences). A child
process has none of that to share.

    python -m finetune_core.serving.export_process MODEL_DIR TARGET [--no-fuse]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import finetune_core

__all__ = ["OnnxExportError", "export_model_dir"]


class OnnxExportError(RuntimeError):
    """The child's export failed; the message is the error it ended with."""


def export_model_dir(model_dir: str | Path, target: str | Path, *, fuse: bool = True) -> Path:
    """``target``: the model directory's graph as ``export_onnx`` writes it, exported in a child process."""
    command = [sys.executable, "-m", __name__, str(model_dir), str(target)] + ([] if fuse else ["--no-fuse"])
    done = subprocess.run(command, capture_output=True, text=True, env=_child_environment())
    if done.returncode != 0:
        raise OnnxExportError(_last_error(done.stderr) or f"the export process exited with {done.returncode}")
    return Path(target)


def _child_environment() -> dict[str, str]:
    """This environment, with the directory this ``finetune_core`` is imported from first on the path
    (a flow run from a source checkout has it on ``sys.path``, not necessarily installed)."""
    root = str(Path(finetune_core.__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _last_error(stderr: str) -> str:
    """The exception line a Python traceback ends with (warnings and logs before it are left out)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    after = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if after:
        tail = [line for line in lines[after[-1] + 1 :] if not line.startswith((" ", "\t"))]
        return tail[0] if tail else lines[-1]
    return lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--no-fuse", action="store_true", help="the graph as exported, without fused operators")
    args = parser.parse_args(argv)
    from finetune_core.serving.onnx_export import export_onnx
    from finetune_core.serving.predictor import load_model_dir

    model, tokenizer, meta = load_model_dir(args.model_dir)
    export_onnx(model, tokenizer, meta, args.target, fuse=not args.no_fuse)


if __name__ == "__main__":
    main()
